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


def test_recent_items_lookback_counts_events_in_one_total_order(spark):
    """The lookback is the user's last N *events* (labels do not use it up), ties at one instant ordered by
    event_id, so the result does not depend on how the rows are partitioned."""
    rows = [
        event("a1", "u1", "view", 1 * H, "i1", "c1"),
        event("a2", "u1", "view", 2 * H, "i2", "c1"),
        event("a3", "u1", "view", 2 * H, "i3", "c1"),  # ties with a2: a3 is the newer
        event("a4", "u1", "purchase", 3 * H, "i4", "c1"),
        event("a5", "u1", "click", 4 * H, "i5", "c1"),
    ]
    # a4 looks back over a2, a3 -> [i3, i2]; a5 over a3, a4 -> [i4, i3] (a4's own label row takes no slot)
    expected = {"a4": ["i3", "i2"], "a5": ["i4", "i3"]}
    for partitions in (1, 3):
        got = training_rows(events_df(spark, rows).repartition(partitions), LABELS, FC, recent_lookback=2)
        assert {r["event_id"]: r["u_recent_items"] for r in got.collect()} == expected


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


def test_catalogue_takes_each_items_newest_known_category_and_price(spark):
    from recsys_lib.models.holdout import catalogue

    rows = [
        event("b1", "u1", "view", 1 * H, "i1", "c1", 5.0),
        event("b2", "u2", "view", 2 * H, "i1", "c2"),          # newest category c2, no price: price stays 5.0
        event("b3", "u1", "view", 2 * H, "i2", "c3", 7.0),
        event("b4", "u2", "view", 2 * H, "i2", None, 8.0),     # ties with b3 at 2h; b4 is newer by event_id
        event("b5", "u1", "view", 9 * H, "i1", "c9", 1.0),     # at the cutoff: not in the catalogue
    ]
    for partitions in (1, 3):
        got = catalogue(events_df(spark, rows).repartition(partitions), T0 + 9 * H, FC).collect()
        assert [(r["item_id"], r["category_id"], r["price"], r["i_view_count"]) for r in got] == [
            ("i1", "c2", 5.0, 2), ("i2", "c3", 8.0, 2)]


def test_day_start_features_stand_at_the_labels_midnight(spark):
    rows = [
        event("w1", "u1", "view", 1 * H, "i1", "c1"),
        event("w2", "u1", "purchase", 5 * H, "i2", "c1"),
        event("w3", "u1", "click", 26 * H, "i3", "c1"),
    ]
    got = _rows(spark, rows, feature_time="day_start")
    assert (got["w2"]["u_view_count"], got["w2"]["u_as_of"]) == (None, None)  # no events before T0 (midnight)
    w3 = got["w3"]  # as of T0 + 24h: both earlier events, decayed over 23 and 19 hours
    assert (w3["u_view_count"], w3["u_purchase_count"], w3["u_as_of"]) == (1, 1, T0 + 5 * H)
    assert w3["u_view_decayed_1h"] == pytest.approx(2 ** -23)
    assert w3["u_purchase_decayed_1d"] == pytest.approx(2 ** (-19 / 24))
    assert w3["u_recent_items"] == ["i2", "i1"]
