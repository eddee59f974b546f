"""Ranking metrics against rankings worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys_lib.models.metrics import ranking_metrics, top_k

pytestmark = pytest.mark.unit


def test_metrics_match_hand_computation():
    # user 0: relevant {1, 3}; ranked [1, 2, 3] -> hits at ranks 1 and 3
    # user 1: relevant {4};    ranked [0, 2, 5] -> no hit
    # user 2: no relevant items -> ignored in every average
    top = np.array([[1, 2, 3], [0, 2, 5], [4, 4, 4]])
    m = ranking_metrics(top, [{1, 3}, {4}, set()], ks=[1, 3], n_items=10)
    assert m["users"] == 2
    assert m["recall@1"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["recall@3"] == pytest.approx((2 / 2 + 0) / 2)
    assert m["precision@3"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["hit_rate@3"] == pytest.approx(0.5)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3)
    assert m["ndcg@3"] == pytest.approx((dcg / idcg + 0) / 2)
    # AP@3 for user 0: (P@1 + P@3) / min(|R|, 3) = (1 + 2/3) / 2
    assert m["map@3"] == pytest.approx(((1 + 2 / 3) / 2 + 0) / 2)
    # coverage@1: first columns {1, 0, 4} of 10 items
    assert m["coverage@1"] == pytest.approx(0.3)


def test_ndcg_is_one_for_a_perfect_ranking():
    m = ranking_metrics(np.array([[2, 0, 1]]), [{2, 0}], ks=[3], n_items=3)
    assert m["ndcg@3"] == pytest.approx(1.0)
    assert m["map@3"] == pytest.approx(1.0)


def test_k_larger_than_lists_is_an_error():
    with pytest.raises(ValueError, match="K=5"):
        ranking_metrics(np.zeros((1, 3), dtype=int), [{1}], ks=[5], n_items=3)


def test_top_k_orders_and_excludes():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [1.0, 0.0, 0.2, 0.3]])
    assert top_k(scores, 2).tolist() == [[1, 3], [0, 3]]
    assert top_k(scores, 2, exclude=[[1], []]).tolist() == [[3, 2], [0, 3]]


def test_evaluate_drops_purchased_or_every_seen_item_for_all_models_alike():
    from datetime import UTC, datetime

    import pandas as pd
    import pyarrow as pa

    from recsys_lib.models.evaluate import evaluate
    from recsys_lib.models.holdout import Holdout

    # one user, 4 items; scores rank 0 > 1 > 2 > 3; truth {2}; bought item 0 before, viewed item 1 before
    holdout = Holdout(cutoff=datetime(2024, 1, 1, tzinfo=UTC), items=pd.DataFrame({"item_id": list("abcd")}),
                      users=pa.table({"user_id": ["u"]}), truth=[{2}], purchased=[[0]],
                      history=pd.DataFrame(), train_users=pd.Index(["u"]), seen=[[0, 1]])

    def scorer(users):
        return np.tile(np.array([4.0, 3.0, 2.0, 1.0]), (len(users), 1))

    def hit_at_1(**filters):
        return evaluate(scorer, holdout, [1], **filters)["hit_rate@1"]

    assert hit_at_1(filter_purchased=False) == 0.0          # ranks a first
    assert hit_at_1(filter_purchased=True) == 0.0           # a dropped, b first
    assert hit_at_1(filter_purchased=True, filter_seen=True) == 1.0  # a and b dropped, c (the truth) first


def test_per_user_metrics_average_to_the_ranking_metrics():
    from recsys_lib.models.metrics import per_user_metrics

    top = np.array([[0, 1, 2], [2, 0, 1], [1, 2, 0]])
    truth = [{1}, set(), {0, 2}]
    each = per_user_metrics(top, truth, [1, 2])
    assert list(each["user"]) == [0, 2]  # the user without truth is left out
    # user 0: item 1 at rank 2 -> recall@1 0, recall@2 1, ndcg@2 = (1/log2 3) / 1
    # user 2: items 0, 2 at ranks 3, 2 -> recall@2 1/2, ndcg@2 = (1/log2 3) / (1 + 1/log2 3)
    np.testing.assert_allclose(each["recall@2"], [1.0, 0.5])
    g = 1 / np.log2(3)
    np.testing.assert_allclose(each["ndcg@2"], [g, g / (1 + g)])
    means = ranking_metrics(top, truth, [1, 2], 3)
    assert means["recall@2"] == pytest.approx(0.75) and means["users"] == 2.0


def test_paired_bootstrap_interval_brackets_the_mean_difference():
    from recsys_lib.models.metrics import paired_bootstrap

    a = np.array([0.5, 0.6, 0.7, 0.8, 0.9] * 20)
    mean, low, high = paired_bootstrap(a, a - 0.1)  # a constant difference: a zero-width interval
    assert (mean, low, high) == pytest.approx((0.1, 0.1, 0.1))
    rng = np.random.default_rng(1)
    b = a + rng.normal(0.0, 0.2, len(a))
    mean, low, high = paired_bootstrap(a, b, resamples=4000)
    assert low < mean < high and mean == pytest.approx(float((a - b).mean()))
    assert 0.02 < high - low < 0.2  # about 4 standard errors (0.2 / sqrt(100) each)
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap(a, a[:3])
