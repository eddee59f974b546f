from __future__ import annotations

from pathlib import Path

import pytest

from recsys_lib.core.config import FeaturesConfig
from recsys_lib.features.catalogue import render
from recsys_lib.features.definitions import entities

pytestmark = pytest.mark.unit
DOC = Path(__file__).resolve().parents[2] / "docs" / "features.md"


def test_catalogue_is_in_sync_with_the_definitions():
    assert DOC.read_text() == render(FeaturesConfig()), "regenerate: recsys features catalogue --out docs/features.md"


def test_catalogue_lists_every_stored_column():
    text = render(FeaturesConfig())
    for entity in entities(FeaturesConfig()).values():
        for column in entity.columns:
            assert f"| `{column.name}` |" in text
