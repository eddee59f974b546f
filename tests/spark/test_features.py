"""Each feature family against values computed by hand on tiny inline events."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest

from recsys_lib.core.config import FeaturesConfig
from recsys_lib.features import ITEM, USER, USER_CATEGORY, entities, finalise, fold
from recsys_lib.features.decay import SINGLE_PASS_HALF_LIVES, event_bounds
from recsys_lib.features.fold import fold_columns
from tests.spark.helpers import T0, assert_same_state, by_key, event, events_df

pytestmark = pytest.mark.spark

H = timedelta(hours=1)
FC = FeaturesConfig()
ROWS = [
    event("e1", "u1", "view", 0 * H, "i1", "c1", 10.0),
    event("e2", "u1", "click", 1 * H, "i1", "c1"),
    event("e3", "u1", "purchase", 2 * H, "i1", "c1", 10.0, 2),
    event("e4", "u1", "view", 2 * H, "i2", "c2", 5.0),   # same time as e3: ties break on event_id
    event("e5", "u2", "search", 1 * H),
    event("e6", "u2", "view", 0 * H, "i1", "c1", 12.0),  # older than u1's e1... but later event_id
]


@pytest.fixture(scope="module", params=["two_step", "single_pass"])
def states(spark, request):
    """Every table's states, with the decayed sums in two aggregations, or in one (the span given)."""
    ev = events_df(spark, ROWS)
    ents = entities(FC)
    span = event_bounds(ev)[1] if request.param == "single_pass" else None
    return {name: {tuple(r[k] for k in ents[name].keys): r for r in fold(ev, ents[name], FC, span=span).collect()}
            for name in (USER, ITEM, USER_CATEGORY)}


def test_event_bounds_are_the_latest_time_and_the_span_in_epoch_seconds(spark):
    latest, span = event_bounds(events_df(spark, ROWS))
    assert latest == T0 + 2 * H
    start = T0.replace(tzinfo=UTC).timestamp()  # the session's time zone is UTC
    assert span == (start, start + 2 * 3600)
    assert event_bounds(events_df(spark, [])) == (None, None)


def test_a_span_too_wide_for_one_pass_keeps_old_keys_exact(spark):
    # one pass would take u_old's view as 2^-2000 relative to the latest event: 0, then times 2^2000 (inf)
    rows = [event("e1", "u_old", "view", 0 * H, "i1", "c1"), event("e2", "u_new", "view", 2000 * H, "i1", "c1")]
    ev = events_df(spark, rows)
    _, span = event_bounds(ev)
    assert span is not None and span[1] - span[0] > SINGLE_PASS_HALF_LIVES * FC.half_lives[0]
    users = {r["user_id"]: r for r in fold(ev, entities(FC)[USER], FC, span=span).collect()}
    assert users["u_old"]["view_decayed_1h"] == pytest.approx(1.0)
    assert users["u_new"]["view_decayed_1h"] == pytest.approx(1.0)
    item = fold(ev, entities(FC)[ITEM], FC, span=span).collect()[0]
    assert item["view_decayed_1h"] == pytest.approx(1.0)  # u_old's view: 2^-2000 at the item's as_of
    assert item["view_decayed_7d"] == pytest.approx(1 + 2 ** (-2000 / 168))


def test_counts_and_decayed_sums(states):
    u1 = states[USER][("u1",)]
    assert u1["as_of"] == u1["last_event_ts"] == T0 + 2 * H
    assert (u1["view_count"], u1["click_count"], u1["purchase_count"], u1["search_count"]) == (2, 1, 1, 0)
    assert u1["view_decayed_1h"] == pytest.approx(2 ** -2 + 1)
    assert u1["view_decayed_1d"] == pytest.approx(2 ** (-2 / 24) + 1)
    assert u1["view_decayed_7d"] == pytest.approx(2 ** (-2 / 168) + 1)
    assert u1["click_decayed_1h"] == pytest.approx(0.5)
    assert u1["purchase_decayed_1d"] == pytest.approx(1.0)
    assert u1["add_to_cart_decayed_1h"] == 0.0
    u2 = states[USER][("u2",)]
    assert u2["search_count"] == 1 and u2["search_decayed_1h"] == pytest.approx(1.0)
    assert u2["view_decayed_1h"] == pytest.approx(0.5)


def test_recent_items_newest_first_ties_by_event_id(states):
    u1 = states[USER][("u1",)]
    assert [(x["item_id"], x["event_id"]) for x in u1["recent_items"]] == [("i2", "e4"), ("i1", "e3")]
    assert [x["item_id"] for x in states[USER][("u2",)]["recent_items"]] == ["i1"]


@pytest.mark.parametrize("cutoff, scan_window", [(False, False), (True, False), (True, True)],
                         ids=["fold-all", "cut-old-events-first", "cuts-from-the-latest-sixth"])
def test_recent_items_keep_only_the_limit(spark, cutoff, scan_window):
    fc = FeaturesConfig(recent_items=2)
    rows = [event(f"e{i}", "u", "view", i * H, f"i{i % 3}") for i in range(7)]
    # i3 ties i2's newest time (5h) with a smaller event id, so i2 wins the second place
    rows += [event("d5", "u", "click", 5 * H, "i3"), event("e9", "v", "view", 0 * H, "i9")]
    # with the span 0h..6h the cuts come from 5h on: u has three items there, w only one,
    # so w keeps its older i7 (a cut from w's items there alone would drop it)
    rows += [event("w1", "w", "view", 1 * H, "i7"), event("w2", "w", "view", 6 * H, "i8")]
    ev = events_df(spark, rows)
    span = event_bounds(ev)[1] if scan_window else None
    users = {r["user_id"]: r for r in fold(ev, entities(fc)[USER], fc, large_input=cutoff, span=span).collect()}
    # items i0..i2 last seen at e6 (i0), e5 (i2), e4 (i1): newest two
    assert [x["item_id"] for x in users["u"]["recent_items"]] == ["i0", "i2"]
    assert [x["event_id"] for x in users["u"]["recent_items"]] == ["e6", "e5"]
    assert [x["item_id"] for x in users["v"]["recent_items"]] == ["i9"]  # fewer items than the limit
    assert [x["item_id"] for x in users["w"]["recent_items"]] == ["i8", "i7"]


def test_purchase_spend_and_category_weights(states):
    u1 = states[USER][("u1",)]
    assert (u1["purchase_spend"], u1["purchase_price_sum"], u1["purchase_priced_count"]) == (20.0, 10.0, 1)
    u2 = states[USER][("u2",)]  # no purchase: zeros, not nulls
    assert (u2["purchase_spend"], u2["purchase_price_sum"], u2["purchase_priced_count"]) == (0.0, 0.0, 0)
    w = u1["category_weights"]
    assert w["c1"] == pytest.approx(1 * 2 ** (-2 / 168) + 2 * 2 ** (-1 / 168) + 8)
    assert w["c2"] == pytest.approx(1.0)


def test_user_states_rolled_up_from_user_category_states(spark):
    # u1's search at 3h and u3's events carry no category: they are folded directly, the rest rolled up
    rows = [*ROWS, event("e7", "u1", "search", 3 * H),
            event("e8", "u3", "view", 3 * H, "i9"), event("e9", "u3", "purchase", 1 * H, "i9", None, 4.0, 3)]
    ev = events_df(spark, rows)
    ents = entities(FC)
    span = event_bounds(ev)[1]
    derived = by_key(fold(ev, ents[USER], FC, category_states=fold(ev, ents[USER_CATEGORY], FC, span=span),
                          span=span), ents[USER])
    u1, u3 = derived[("u1",)], derived[("u3",)]
    assert u1["as_of"] == T0 + 3 * H and u1["search_count"] == 1 and u1["view_count"] == 2
    assert u1["view_decayed_1h"] == pytest.approx(2 ** -3 + 2 ** -1, rel=1e-12)  # views at 0h and 2h
    assert u1["click_decayed_1d"] == pytest.approx(2 ** (-2 / 24), rel=1e-12)
    assert (u1["purchase_spend"], u1["purchase_priced_count"]) == (20.0, 1)
    assert u1["category_weights"]["c1"] == pytest.approx(
        (1 * 2 ** (-3 / 168) + 2 * 2 ** (-2 / 168) + 8 * 2 ** (-1 / 168)), rel=1e-12)
    assert u3["as_of"] == T0 + 3 * H and (u3["view_count"], u3["purchase_count"]) == (1, 1)
    assert u3["purchase_decayed_1h"] == pytest.approx(0.25, rel=1e-12) and u3["purchase_spend"] == 12.0
    assert u3["category_weights"] == {}
    assert_same_state(by_key(fold(ev, ents[USER], FC), ents[USER]), derived, ents[USER])  # as the direct fold


def test_category_weights_derived_from_user_category_states(spark, states):
    ev = events_df(spark, ROWS)
    ents = entities(FC)
    derived = fold(ev, ents[USER], FC, category_states=fold(ev, ents[USER_CATEGORY], FC))
    w = {r["user_id"]: r["category_weights"] for r in derived.collect()}
    assert w["u1"]["c1"] == pytest.approx(1 * 2 ** (-2 / 168) + 2 * 2 ** (-1 / 168) + 8, rel=1e-12)
    assert w["u1"]["c2"] == pytest.approx(1.0, rel=1e-12)
    # u2's only category event (a view of c1 at 0h) is 1h older than u2's as_of (the search at 1h)
    assert w["u2"] == pytest.approx({"c1": 2 ** (-1 / 168)}, rel=1e-12)
    for user, weights in w.items():  # and the direct fold agrees
        assert weights == pytest.approx(states[USER][(user,)]["category_weights"], rel=1e-12)


def test_item_latest_values_and_distinct_users(states):
    i1 = states[ITEM][("i1",)]
    assert i1["latest_category"]["value"] == "c1"
    assert (i1["latest_price"]["value"], i1["latest_price"]["event_id"]) == (10.0, "e3")
    assert (i1["view_count"], i1["click_count"], i1["purchase_count"]) == (2, 1, 1)
    assert ("u2",) not in states[ITEM] and (None,) not in states[ITEM]  # search has no item


def test_only_the_item_table_aggregates_families_apart_and_each_is_a_stored_column(spark):
    # bench/floors.py times each family by name, and fold joins them back as those columns
    ents = entities(FC)
    apart = {name: set(fold_columns(ents[name], FC)[2]) for name in (USER, ITEM, USER_CATEGORY)}
    assert apart == {USER: set(), USER_CATEGORY: set(), ITEM: {"latest_category", "latest_price", "users_hll"}}
    assert apart[ITEM] <= {c.name for c in ents[ITEM].columns}
    ev = events_df(spark, ROWS).where("item_id is not null")
    sketch = ev.groupBy("item_id").agg(fold_columns(ents[ITEM], FC)[2]["users_hll"])
    assert sketch.columns == ["item_id", "users_hll"]
    assert {r.item_id: r.n for r in sketch.selectExpr("item_id", "hll_sketch_estimate(users_hll) as n").collect()} \
        == {"i1": 2, "i2": 1}


def test_user_category_rows(states):
    uc = states[USER_CATEGORY]
    assert sorted(uc) == [("u1", "c1"), ("u1", "c2"), ("u2", "c1")]
    assert uc[("u1", "c1")]["as_of"] == T0 + 2 * H
    assert uc[("u1", "c2")]["view_decayed_1h"] == pytest.approx(1.0)


def test_read_time_features(spark):
    ev = events_df(spark, ROWS)
    ents = entities(FC)
    at = T0 + 4 * H
    users = {r["user_id"]: r for r in finalise(fold(ev, ents[USER], FC), ents[USER], FC, at).collect()}
    u1 = users["u1"]
    assert u1["view_decayed_1h"] == pytest.approx((2 ** -2 + 1) * 2 ** -2)  # moved 2h further
    assert u1["recency_seconds"] == pytest.approx(7200.0)
    assert u1["ctr"] == pytest.approx((1 + 0.05 * 20) / (2 + 20))
    assert u1["cvr"] == pytest.approx((1 + 0.1 * 20) / (1 + 20))
    assert u1["recent_item_ids"] == ["i2", "i1"]
    assert [c["category_id"] for c in u1["top_categories"]] == ["c1", "c2"]
    assert u1["top_categories"][1]["weight"] == pytest.approx(2 ** (-2 / 168))
    assert u1["avg_purchase_price"] == 10.0
    assert users["u2"]["avg_purchase_price"] is None
    items = {r["item_id"]: r for r in finalise(fold(ev, ents[ITEM], FC), ents[ITEM], FC, at).collect()}
    assert (items["i1"]["category_id"], items["i1"]["price"], items["i1"]["distinct_users"]) == ("c1", 10.0, 2)
