"""The exactness invariant: folding batches and merging equals folding everything.

Exact for counts, sets, sequences and sketches; within 1e-9 relative error for
decayed sums. Events include out-of-order arrival, late events and duplicate
timestamps.
"""

from __future__ import annotations

from datetime import timedelta
from functools import reduce

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_lib.core.config import FeaturesConfig
from recsys_lib.core.schema import EVENT_TYPES
from recsys_lib.features import ITEM, USER, USER_CATEGORY, entities, fold, merge
from recsys_lib.features.decay import event_bounds
from tests.spark.helpers import assert_same_state, by_key, event, events_df

pytestmark = pytest.mark.spark

FC = FeaturesConfig(recent_items=3)
ENTITIES = entities(FC)

event_strategy = st.tuples(
    st.sampled_from(["u1", "u2", "u3"]),
    st.sampled_from(EVENT_TYPES),
    st.integers(0, 72 * 60).map(lambda m: timedelta(minutes=m)),  # coarse grid: duplicate timestamps happen
    st.sampled_from(["i1", "i2", "i3", "i4", "i5"]),
    st.sampled_from(["c1", "c2", None]),
    st.one_of(st.none(), st.floats(0, 500, allow_nan=False).map(lambda p: round(p, 2))),
    st.one_of(st.none(), st.integers(1, 4)),
)


def _events(raw):
    rows = []
    for n, (user, etype, ts, item, cat, price, qty) in enumerate(raw):
        rows.append(event(f"e{n:03d}", user, etype, ts, None if etype == "search" else item, cat, price, qty))
    return rows


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(raw=st.lists(event_strategy, min_size=1, max_size=25), cuts=st.lists(st.integers(0, 25), max_size=3),
       order=st.randoms(use_true_random=False))
def test_any_batch_split_merges_to_the_full_refresh(spark, raw, cuts, order):
    rows = _events(raw)
    order.shuffle(rows)  # arrival order is not event-time order: late and out-of-order events
    bounds = sorted({0, len(rows), *[min(c, len(rows)) for c in cuts]})
    batches = [rows[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    for name in (USER, ITEM, USER_CATEGORY):
        entity = ENTITIES[name]
        everything = events_df(spark, rows)
        # the full refresh derives the user's category weights from the user x category states and
        # cuts old events before ranking recent items; the batches do neither: both ways must agree
        span = event_bounds(everything)[1]  # and it sums the decayed terms in one pass
        derived = fold(everything, ENTITIES[USER_CATEGORY], FC, span=span) if name == USER else None
        full = fold(everything, entity, FC, category_states=derived, large_input=True, span=span)
        parts = [fold(events_df(spark, batch), entity, FC) for batch in batches]
        merged = reduce(lambda a, b: merge(a, b, entity, FC), parts)
        assert_same_state(by_key(full, entity), by_key(merged, entity), entity)
        if name == ITEM:
            from pyspark.sql import functions as F

            est = lambda df: {r[0]: r[1] for r in df.select("item_id", F.hll_sketch_estimate("users_hll")).collect()}  # noqa: E731
            assert est(full) == est(merged)


def test_merge_is_commutative_and_has_an_identity(spark):
    rows = _events([("u1", "view", timedelta(minutes=5), "i1", "c1", 3.0, None),
                    ("u1", "purchase", timedelta(minutes=9), "i2", "c2", 7.5, 2),
                    ("u2", "click", timedelta(minutes=1), "i1", "c1", None, None)])
    entity = ENTITIES[USER]
    a = fold(events_df(spark, rows[:1]), entity, FC)
    b = fold(events_df(spark, rows[1:]), entity, FC)
    empty = fold(events_df(spark, []), entity, FC)
    ab, ba = by_key(merge(a, b, entity, FC), entity), by_key(merge(b, a, entity, FC), entity)
    assert_same_state(ab, ba, entity)
    assert_same_state(by_key(a, entity), by_key(merge(a, empty, entity, FC), entity), entity)
