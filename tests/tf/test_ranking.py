"""The DCN-v2 ranking stage: pair features, hard negatives, learning a cross, save/load, re-ranking."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_lib.models.ranking import (
    RankerSpec,
    fit_ranker,
    load_ranker,
    pair_features,
    rerank,
    save_ranker,
    scores,
    training_pairs,
    width,
)

pytestmark = pytest.mark.tf


def test_pair_features_hold_both_sides_their_product_and_the_retrieval_score():
    got = pair_features(np.array([[1.0, 2.0]]), np.array([[3.0, 4.0]]), np.array([[5.0]]), np.array([[6.0, 7.0]]))
    assert got.tolist() == [[1, 2, 3, 4, 3, 8, 11, 5, 6, 7]]
    assert got.shape[1] == width(2, 1, 2)


def test_negatives_come_from_the_retrievals_top_candidates_never_the_positive():
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    items = np.array([[0.9, 0.0], [0.8, 0.1], [0.0, 0.9], [0.1, 0.8], [-1.0, -1.0]])
    # query 0's top 3 by inner product: items 0, 1, 3; query 1's: items 2, 3, 1
    rows, chosen, labels = training_pairs(queries, np.array([0, 2]), items, negatives=2, candidates=3, seed=1)
    assert list(rows[:2]) == [0, 1] and list(chosen[:2]) == [0, 2] and list(labels[:2]) == [1, 1]
    negatives = {int(r): set() for r in rows[2:]}
    for r, i, y in zip(rows[2:], chosen[2:], labels[2:], strict=True):
        assert y == 0
        negatives[int(r)].add(int(i))
    assert negatives == {0: {1, 3}, 1: {3, 1}}


def test_the_ranker_learns_a_feature_cross_and_reloads_identically(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6000, 6)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.float32)  # a pure cross: no single feature says anything
    model, epochs = fit_ranker(x, y, RankerSpec(6, cross_layers=2, deep_layers=[16]), epochs=8, batch_size=128,
                               learning_rate=0.01, seed=0)
    # a linear model scores AUC 0.5 on this label; 0.88 measured with this seed
    assert epochs[-1]["auc"] > 0.8 and epochs[-1]["loss"] < epochs[0]["loss"]
    save_ranker(model, tmp_path / "ranker")
    again = load_ranker(tmp_path / "ranker")
    np.testing.assert_allclose(scores(again, x[:100]), scores(model, x[:100]), rtol=1e-6, atol=1e-6)


def test_rerank_orders_by_the_rankers_score_and_keeps_excluded_items_last(tmp_path):
    rng = np.random.default_rng(1)
    queries, items = rng.normal(size=(2, 3)).astype(np.float32), rng.normal(size=(6, 3)).astype(np.float32)
    q_num, i_num = np.zeros((2, 0), np.float32), np.zeros((6, 0), np.float32)
    model, _ = fit_ranker(rng.normal(size=(64, width(3, 0, 0))).astype(np.float32),
                          rng.integers(0, 2, 64).astype(np.float32), RankerSpec(width(3, 0, 0)), epochs=1,
                          batch_size=32, learning_rate=0.01, seed=0)
    top = np.array([[0, 1, 2, 3], [5, 4, 3, 2]])
    got = rerank(model, top, queries, q_num, items, i_num, exclude=[[1], []])
    for u in range(2):
        logits = scores(model, pair_features(queries[[u] * 4], items[top[u]], q_num[[u] * 4], i_num[top[u]]))
        expected = [int(top[u][j]) for j in np.argsort(-logits, kind="stable")]
        if u == 0:
            expected = [i for i in expected if i != 1] + [1]
        assert got[u].tolist() == expected
