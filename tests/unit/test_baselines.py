"""Item-kNN, EASE and the inner-split tuning, on matrices small enough to compute by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from recsys_lib.models.baselines import ease, item_knn, popularity
from recsys_lib.models.evaluate import InnerSplit, inner_split, tune
from recsys_lib.models.holdout import Holdout

pytestmark = pytest.mark.unit


def _history(pairs: list[tuple[int, int]], ts: list[float] | None = None) -> pd.DataFrame:
    return pd.DataFrame({"user_idx": [u for u, _ in pairs], "item_idx": [i for _, i in pairs],
                         "ts_s": ts if ts is not None else [0.0] * len(pairs)})


# users 0..4: {0,1}, {0,1,2}, {1,2}, {1}, {2}; item counts 2, 4, 3; co-counts (0,1)=2 (0,2)=1 (1,2)=2
KNN = _history([(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (4, 2)])


def test_item_knn_keeps_each_items_nearest_neighbours():
    s01, s02, s12 = 2 / math.sqrt(2 * 4), 1 / math.sqrt(2 * 3), 2 / math.sqrt(4 * 3)  # .707 .408 .577
    one = item_knn(KNN, 5, 3, np.array([0, 4, -1]), neighbours=1, shrinkage=0.0)(np.arange(3))
    # item 0 keeps item 1 (.707 > .408); item 1 keeps item 0 (.707 > .577); item 2 keeps item 1 (.577 > .408)
    np.testing.assert_allclose(one[0], [s01, s01, s12], atol=1e-8)  # user 0 holds items 0 and 1
    np.testing.assert_allclose(one[1], [0.0, 0.0, 0.0], atol=1e-8)  # item 2 is nobody's nearest neighbour
    assert int(np.argmax(one[2])) == 1  # no history: the popularity tie-break (item 1 has 4 users)
    two = item_knn(KNN, 5, 3, np.array([0]), neighbours=2, shrinkage=1.0)(np.arange(1))
    np.testing.assert_allclose(two[0], [2 / (math.sqrt(8) + 1), 2 / (math.sqrt(8) + 1),
                                        1 / (math.sqrt(6) + 1) + 2 / (math.sqrt(12) + 1)], atol=1e-8)
    assert s02 < s12  # (the order the neighbours=1 case relies on)


def test_ease_matches_the_closed_form_by_hand():
    # users {0,1} and {0}: G = [[2,1],[1,1]]; G + I = [[3,1],[1,2]]; P = [[2,-1],[-1,3]] / 5
    # B_ij = -P_ij / P_jj: B_01 = 1/3, B_10 = 1/2
    history = _history([(0, 0), (0, 1), (1, 0)])
    scores = ease(history, 2, 2, np.array([0, 1]), reg=1.0)(np.arange(2))
    np.testing.assert_allclose(scores, [[0.5, 1 / 3], [0.0, 1 / 3]], atol=1e-8)
    capped = ease(history, 2, 2, np.array([1]), reg=1.0, max_items=1)(np.arange(1))
    assert capped[0, 0] > -1 and capped[0, 1] < -1e8  # item 1 (fewer users) left out, ranked last


def _holdout(history: pd.DataFrame, cutoff_s: float, n_items: int) -> Holdout:
    return Holdout(cutoff=datetime.fromtimestamp(cutoff_s, UTC), items=pd.DataFrame({"item_id": range(n_items)}),
                   users=pa.table({"user_id": []}), truth=[], purchased=[], history=history,
                   train_users=pd.Index(range(int(history["user_idx"].max()) + 1)))


def test_inner_split_uses_only_the_days_before_the_cutoff():
    day = 86400.0
    # items 0, 1 known before the inner cutoff (day 8); item 2 is new inside the inner window
    history = _history([(0, 0), (1, 1), (0, 1), (1, 2), (2, 0)], ts=[1 * day, 2 * day, 8.5 * day, 9 * day, 9.5 * day])
    split = inner_split(_holdout(history, 10 * day, 3), days=2)
    assert split.cutoff_s == 8 * day
    assert list(split.train["ts_s"]) == [1 * day, 2 * day]
    assert list(split.users) == [0, 2] and split.truth == [{1}, {0}]  # user 1's only label is on the new item 2


def test_tune_picks_the_value_that_scores_best_on_the_inner_split():
    day = 86400.0
    # item 0 was popular long ago, item 1 recently: a short half-life ranks item 1 first
    history = _history([(0, 0), (1, 0), (2, 0), (0, 1), (1, 1)], ts=[0.0, 0.0, 0.0, 7.9 * day, 7.9 * day])
    split = InnerSplit(train=history, users=np.array([2]), truth=[{1}], cutoff_s=8 * day)
    best, scores = tune(lambda hl, s: popularity(s.train, 2, s.cutoff_s, hl), [30 * day, 0.5 * day], split, 2,
                        "recall@1")
    assert best == 0.5 * day and scores == {str(30 * day): 0.0, str(0.5 * day): 1.0}
    with pytest.raises(ValueError, match="grid is empty"):
        tune(lambda hl, s: popularity(s.train, 2, s.cutoff_s, hl), [], split, 2, "recall@1")
