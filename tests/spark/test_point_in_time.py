"""Point-in-time training rows against hand-computed values, and the leakage test."""

from __future__ import annotations

from datetime import timedelta

import pytest

from recsys_lib.core.config import FeaturesConfig
from recsys_lib.features.point_in_time import training_rows
from tests.spark.helpers import T0, event, events_df

pytestmark = pytest.mark.spark

H = timedelta(hours=1)
FC = FeaturesConfig()
LABELS = ["purchase", "add_to_cart", "click"]
ROWS = [
    event("e1", "u1", "view", 0 * H, "i1", "c1"),
    event("e2", "u1", "click", 1 * H, "i1", "c1"),
    event("e3", "u1", "purchase", 2 * H, "i1", "c1", 9.0),
    event("e4", "u1", "view", 2 * H, "i2", "c2"),  # same instant as the e3 label: not visible to it
    event("e5", "u1", "add_to_cart", 3 * H, "i2", "c2"),
    event("e6", "u2", "view", 1 * H, "i1", "c1"),
]


def _rows(spark, rows, **kw):
    return {r["event_id"]: r for r in training_rows(events_df(spark, rows), LABELS, FC, **kw).collect()}


def test_features_as_they_stood_strictly_before_each_label(spark):
    got = _rows(spark, ROWS)
    assert sorted(got) == ["e2", "e3", "e5"]
    e2, e3, e5 = got["e2"], got["e3"], got["e5"]
    assert (e2["u_view_count"], e2["u_click_count"], e2["u_as_of"]) == (1, 0, T0)
    assert e2["u_view_decayed_1h"] == pytest.approx(0.5)
    assert e2["u_recent_items"] == ["i1"]
    assert (e2["i_view_count"], e2["i_click_count"]) == (1, 0)  # u2's view of i1 is at the label's instant
    assert (e3["u_view_count"], e3["u_click_count"], e3["u_purchase_count"]) == (1, 1, 0)
    assert e3["u_view_decayed_1h"] == pytest.approx(0.25)
    assert e3["u_click_decayed_1d"] == pytest.approx(2 ** (-1 / 24))
    assert e3["u_recent_items"] == ["i1"]
    assert (e5["u_view_count"], e5["u_purchase_count"], e5["u_as_of"]) == (2, 1, T0 + 2 * H)
    assert e5["u_view_decayed_1h"] == pytest.approx(2 ** -3 + 2 ** -1)
    assert e5["u_recent_items"] == ["i2", "i1"]  # e4 and e3 tie at 2h: the larger event_id is newer
    assert (e5["i_view_count"], e5["i_add_to_cart_count"]) == (1, 0)
    assert e5["label_type"] == "add_to_cart" and e3["price"] == 9.0


def test_later_events_never_change_earlier_rows(spark):
    before = _rows(spark, ROWS)
    planted = ROWS + [
        event("z1", "u1", "purchase", 3 * H, "i1", "c1"),   # same instant as e5: invisible to it
        event("z2", "u1", "view", 10 * H, "i9", "c9"),
        event("z3", "u2", "purchase", 20 * H, "i2", "c2"),
    ]
    after = _rows(spark, planted)
    for eid, row in before.items():
        assert after[eid].asDict() == row.asDict(), eid


def test_decayed_sums_cross_time_blocks_without_overflow(spark):
    rows = [event("a", "u", "view", 0 * H, "i1"), event("b", "u", "purchase", 200 * H, "i2"),
            event("c", "u", "purchase", 2000 * H, "i3")]
    got = _rows(spark, rows)
    assert got["b"]["u_view_decayed_1h"] == pytest.approx(2 ** -200, rel=1e-9)
    assert got["b"]["u_view_decayed_7d"] == pytest.approx(2 ** (-200 / 168), rel=1e-9)
    assert got["c"]["u_view_decayed_7d"] == pytest.approx(2 ** (-2000 / 168), rel=1e-9)
    assert got["c"]["u_purchase_decayed_1d"] == pytest.approx(2 ** (-1800 / 24), rel=1e-9)


def test_label_day_window(spark):
    rows = ROWS + [event("late", "u1", "purchase", 30 * H, "i1")]
    got = _rows(spark, rows, first_day=(T0 + 30 * H).date())
    assert sorted(got) == ["late"]
    assert got["late"]["u_purchase_count"] == 1
