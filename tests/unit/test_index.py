"""ANN indexes: exactness of brute force, ScaNN recall against it, save and load."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_lib.models.index import BruteForceIndex, build_index, load_index, recall_against_exact

pytestmark = pytest.mark.unit


def test_brute_force_returns_the_exact_top_k():
    items = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0]])
    idx, scores = BruteForceIndex(items).search(np.array([[1.0, 0.2]]), 3)
    # scores: 1.0, 0.2, 0.84, -1.0 -> order 0, 2, 1
    assert idx.tolist() == [[0, 2, 1]]
    assert scores[0].tolist() == pytest.approx([1.0, 0.84, 0.2])


def test_auto_picks_brute_force_for_small_catalogues():
    assert build_index(np.eye(3), "auto", scann_min_items=10).kind == "brute_force"
    with pytest.raises(ValueError, match="serve.index"):
        build_index(np.eye(3), "faiss")


def test_scann_recall_at_100_and_roundtrip(tmp_path):
    pytest.importorskip("scann", reason="ScaNN is not installed")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 32))
    items = (centres[rng.integers(0, 50, 20_000)] + 0.3 * rng.normal(size=(20_000, 32))).astype(np.float32)
    queries = rng.normal(size=(200, 32)).astype(np.float32)
    index = build_index(items, "scann")
    assert recall_against_exact(index, items, queries, 100) >= 0.95
    index.save(tmp_path / "ix")
    again = load_index(tmp_path / "ix")
    assert again.kind == "scann"
    np.testing.assert_array_equal(again.search(queries[:5], 10)[0], index.search(queries[:5], 10)[0])
