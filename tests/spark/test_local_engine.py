"""The driver-local engine (Arrow, pandas) against the Spark engine, and its hand-computed results."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_lib.core.config import FeaturesConfig
from recsys_lib.core.schema import EVENT_TYPES, EVENTS_SCHEMA
from recsys_lib.features import ITEM, USER, USER_CATEGORY, entities, fold
from recsys_lib.features.layers import PENDING, as_pending, overlay, table_spec
from recsys_lib.features.local import fold_local, overlay_local
from recsys_lib.lake.files import spark_to_arrow
from tests.spark.helpers import T0, assert_same_state, by_key, event, events_df

pytestmark = pytest.mark.spark

FC = FeaturesConfig(recent_items=3)
ENTITIES = entities(FC)
NOW = datetime(2024, 3, 1, tzinfo=UTC)

event_strategy = st.tuples(
    st.sampled_from(["u1", "u2", "u3"]),
    st.sampled_from(EVENT_TYPES),
    st.integers(0, 72 * 60).map(lambda m: timedelta(minutes=m)),
    st.sampled_from(["i1", "i2", "i3", "i4", "i5"]),
    st.sampled_from(["c1", "c2", None]),
    st.one_of(st.none(), st.floats(0, 500, allow_nan=False).map(lambda p: round(p, 2))),
    st.one_of(st.none(), st.integers(1, 4)),
)


def _rows(raw, prefix="e"):
    return [event(f"{prefix}{n:03d}", user, etype, ts, None if etype == "search" else item, cat, price, qty)
            for n, (user, etype, ts, item, cat, price, qty) in enumerate(raw)]


def arrow_events(rows):
    """Event rows (as built by ``helpers.event``) as an Arrow table of the ``events`` schema."""
    names = EVENTS_SCHEMA.fieldNames()
    return pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in rows], spark_to_arrow(EVENTS_SCHEMA))


def _naive(value):
    """Arrow's UTC datetimes as Spark's collect returns them (naive UTC)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, dict):
        return {k: _naive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_naive(v) for v in value]
    return value


def local_by_key(table, entity):
    """Rows by key as :func:`helpers.by_key` gives Spark's (maps as dicts, naive UTC datetimes)."""
    maps = {f.name for f in table.schema if pa.types.is_map(f.type)}
    return {tuple(r[k] for k in entity.keys): {c: dict(v) if c in maps else _naive(v) for c, v in r.items()}
            for r in table.to_pylist()}


def _hll_bytes(rows):
    return {key: bytes(r["users_hll"]) for key, r in rows.items()}


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(raw=st.lists(event_strategy, min_size=1, max_size=25), cut=st.integers(0, 25))
def test_local_fold_and_overlay_equal_spark(spark, raw, cut):
    rows = _rows(raw)
    first, second = rows[:cut], rows[cut:]
    for name in (USER, ITEM, USER_CATEGORY):
        entity = ENTITIES[name]
        spark_full = by_key(fold(events_df(spark, rows), entity, FC), entity)
        local_full = local_by_key(fold_local(arrow_events(rows), entity, FC, NOW), entity)
        assert_same_state(spark_full, local_full, entity)
        # the stored pending layer comes from Spark, the batch from the local engine: merged, both equal the fold
        pending = as_pending(fold(events_df(spark, first), entity, FC)).toArrow()
        merged = overlay_local(pending, fold_local(arrow_events(second), entity, FC, NOW), entity, FC, NOW)
        assert set(merged.column("key_bucket").to_pylist()) <= {PENDING}
        assert_same_state(spark_full, local_by_key(merged, entity), entity)
        if name == ITEM:  # sketches are byte-identical to Spark's (both for the fold and for the union)
            assert _hll_bytes(local_full) == _hll_bytes(spark_full)
            spark_merged = by_key(overlay(as_pending(fold(events_df(spark, first), entity, FC)),
                                          fold(events_df(spark, second), entity, FC), entity, FC), entity)
            assert _hll_bytes(local_by_key(merged, entity)) == _hll_bytes(spark_merged)


def test_local_fold_by_hand():
    rows = [event("e1", "u1", "view", timedelta(0), "i1", "c1"),
            event("e2", "u1", "purchase", timedelta(hours=1), "i2", "c1", 10.0, 3),
            event("e3", "u1", "view", timedelta(hours=1), "i1", "c2"),
            event("e4", "u2", "search", timedelta(hours=2))]
    got = local_by_key(fold_local(arrow_events(rows), ENTITIES[USER], FC, NOW), ENTITIES[USER])
    u1 = got[("u1",)]
    assert u1["as_of"] == T0 + timedelta(hours=1)
    assert u1["view_count"] == 2 and u1["purchase_count"] == 1
    assert u1["view_decayed_1h"] == pytest.approx(1.5)  # 2^-1 + 2^0
    assert u1["purchase_spend"] == 30.0 and u1["purchase_price_sum"] == 10.0 and u1["purchase_priced_count"] == 1
    # e3 beats e2 at the same time by its larger event_id; i1's newest entry is e3
    assert [(e["event_id"], e["item_id"]) for e in u1["recent_items"]] == [("e3", "i1"), ("e2", "i2")]
    week = 7 * 24
    assert u1["category_weights"] == pytest.approx({"c1": 2 ** (-1 / week) + 8.0, "c2": 1.0})
    assert got[("u2",)]["recent_items"] == [] and got[("u2",)]["category_weights"] == {}
    assert got[("u2",)]["search_decayed_7d"] == 1.0


def test_local_overlay_by_hand():
    entity = ENTITIES[USER_CATEGORY]
    old = fold_local(arrow_events([event("e1", "u1", "view", timedelta(0), "i1", "c1"),
                                   event("e2", "u9", "view", timedelta(0), "i1", "c1")]), entity, FC, NOW)
    new = fold_local(arrow_events([event("e3", "u1", "view", timedelta(hours=2), "i1", "c1")]), entity, FC, NOW)
    got = local_by_key(overlay_local(old, new, entity, FC, NOW), entity)
    assert got[("u1", "c1")]["view_decayed_1h"] == pytest.approx(1.25)  # 1 x 2^-2 + 1
    assert got[("u1", "c1")]["view_count"] == 2
    assert got[("u9", "c1")]["view_count"] == 1  # untouched keys stay


def test_arrow_reads_and_writes_round_trip_through_the_lake(spark, lake):
    entity = ENTITIES[USER]
    spec = table_spec(entity)
    lake.create(spec)
    states = fold_local(arrow_events(_rows([("u1", "view", timedelta(0), "i1", "c1", None, None),
                                             ("u2", "purchase", timedelta(hours=1), "i2", "c2", 4.0, 2)])),
                        entity, FC, NOW)
    result = lake.replace_partitions_arrow(spec, states, "key_bucket", [PENDING], read_version=lake.version(spec.name))
    assert result.rows == 2
    assert_same_state(local_by_key(states, entity), by_key(lake.read(spec.name), entity), entity)
    again = lake.read_arrow(spec.name, partitions=("key_bucket", [PENDING]))
    assert_same_state(local_by_key(states, entity), local_by_key(again, entity), entity)
