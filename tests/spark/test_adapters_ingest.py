"""Adapted real data must ingest cleanly: every record valid, counts reconciled."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from recsys_lib.datagen.adapters import adapt_movielens, adapt_taobao
from recsys_lib.pipelines.ingest import run_ingest
from tests.conftest import shared_dataset

pytestmark = pytest.mark.spark
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_taobao_sample_ingests_without_quarantine(spark, lake, cfg, tmp_path):
    csv = shared_dataset("taobao-userbehavior-sample", "UserBehavior.csv")
    adapted = adapt_taobao(csv, tmp_path / "raw")
    summary = run_ingest(spark, lake, cfg, str(tmp_path / "raw"), now=NOW)
    assert summary.balanced and summary.quarantined == 0
    assert summary.valid + summary.duplicates == adapted.events


@pytest.mark.slow
def test_movielens_ingests_without_quarantine(spark, lake, cfg, tmp_path):
    folder = shared_dataset("ml-latest-small")
    # its first 20,000 of 100,836 ratings (sorted by user: the users with the lowest ids), to keep the suite short
    with (folder / "ratings.csv").open() as fh:
        head = [line for _, line in zip(range(20_001), fh, strict=False)]
    (tmp_path / "ratings.csv").write_text("".join(head))
    adapted = adapt_movielens(tmp_path / "ratings.csv", folder / "movies.csv", tmp_path / "raw")
    summary = run_ingest(spark, lake, cfg, str(tmp_path / "raw"), now=NOW)
    assert summary.balanced and summary.quarantined == 0 and summary.duplicates == 0
    assert summary.valid == adapted.events
    purchases = lake.read("events").where("event_type = 'purchase'").count()
    assert 0 < purchases < adapted.events
