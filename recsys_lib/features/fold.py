"""Fold events into feature states, and merge two states: plain DataFrame transforms.

``fold`` serves both the full refresh (all events) and incremental updates (a
micro-batch); ``merge`` combines a stored state with a batch's state. For any
split of an event multiset into batches, folding each batch and merging the
results equals folding everything at once (see tests/spark/test_features_exactness.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recsys_lib.core.config import FeaturesConfig
from recsys_lib.core.schema import EVENT_TYPES
from recsys_lib.features.decay import TwoPhase, decayed_sums, memo, single_pass
from recsys_lib.features.definitions import (
    BUCKET,
    ITEM,
    USER,
    USER_CATEGORY,
    Entity,
    Sides,
    decayed_name,
    seconds,
)
from recsys_lib.features.user_parts import (
    category_weights,
    category_weights_from_states,
    purchase_aggs,
    recent_items,
    user_sums_from_categories,
    weights_map,
    with_weights_via_latest,
)


def fold(events: DataFrame, entity: Entity, fc: FeaturesConfig, updated_at: datetime | None = None, *,
         category_states: DataFrame | None = None, large_input: bool = False,
         span: tuple[float, float] | None = None) -> DataFrame:
    """The state of every key of ``entity`` after folding ``events`` (an ``events``-shaped DataFrame).

    Args:
        events: The events to fold.
        entity: The table whose states to build.
        fc: Feature config.
        updated_at: Stamp for ``updated_at`` (None: the current time).
        category_states: For the user table only: the user x category states of the same
            ``events``, when the caller has them (the full refresh does). The category
            weights then come from them instead of a second pass over the events; with
            ``span`` (single pass) so do the user's times, counts and decayed sums, only the
            events without a category and the purchases being aggregated again
            (:func:`.user_parts.user_sums_from_categories`). Same values up to rounding.
            The weights are derived only if the affinity half-life is one of ``fc.half_lives``.
        large_input: Plan for many events per key (the full refresh): before ranking a
            user's recent items, drop the events that cannot make the list
            (:func:`.user_parts.recent_items`), finding where to cut in the latest
            :data:`.user_parts.RECENT_SCAN_SHARE` of ``span`` when given. Same result; cheaper over
            many events per user, dearer over a small batch.
        span: The earliest and latest ``event_ts`` of ``events`` in epoch seconds
            (:func:`.decay.event_bounds`), when the caller has them (the full refresh does). Within
            :data:`.decay.SINGLE_PASS_HALF_LIVES` smallest half-lives, the decayed sums then take one
            aggregation instead of two (:func:`.decay.decayed_sums`).

    """
    keys = list(entity.keys)
    ev = events
    if entity.name == ITEM:
        ev = ev.where(F.col("item_id").isNotNull())
    if entity.name == USER_CATEGORY:
        ev = ev.where(F.col("category_id").isNotNull())
    ev = ev.withColumn("_ts", seconds(F.col("event_ts")))
    memo_key = ("fold", entity.name, fc.model_dump_json())
    terms, carried, apart = memo(memo_key, lambda: fold_columns(entity, fc))
    if entity.name == USER and category_states is not None and single_pass(span, min(fc.half_lives)):
        state = user_sums_from_categories(ev, category_states, terms, cast(tuple[float, float], span)[1])
    else:
        state = decayed_sums(ev, keys, terms, min(fc.half_lives), carried=carried, memo_key=memo_key, span=span)
    state = state.drop("_as_of_s")
    if apart:
        state = state.join(ev.groupBy(*keys).agg(*apart.values()), keys)
    if entity.name == USER:
        state = _with_user_parts(state, ev, fc, category_states, large_input, span)
    stamp = F.lit(updated_at).cast("timestamp") if updated_at else F.current_timestamp()
    state = state.withColumn("updated_at", stamp).withColumn(BUCKET, key_bucket(keys, fc))
    return conform(state, entity)


def _with_user_parts(state: DataFrame, ev: DataFrame, fc: FeaturesConfig, category_states: DataFrame | None,
                     large_input: bool, span: tuple[float, float] | None) -> DataFrame:
    """The user ``state`` with its recent items and category weights (see :func:`fold`)."""
    state = state.join(recent_items(ev, fc, cutoff=large_input, span=span), "user_id", "left")
    if category_states is not None and fc.affinity_half_life in fc.half_lives:
        per_category = category_weights_from_states(category_states, fc)
    else:
        per_category = category_weights(ev, fc)
    if span is not None and single_pass(span, min(fc.half_lives)):
        state = with_weights_via_latest(state, per_category, span[1], fc)
    else:
        user_as_of = state.select("user_id", seconds(F.col("as_of")).alias("_u"))
        state = state.join(weights_map(per_category, user_as_of, fc), "user_id", "left")
    return state.withColumn("recent_items", F.coalesce("recent_items", F.array())).withColumn(
        "category_weights", F.coalesce("category_weights", F.create_map()))


def fold_columns(entity: Entity, fc: FeaturesConfig) -> tuple[dict[str, tuple[Column, float]], list[TwoPhase],
                                                               dict[str, Column]]:
    """One entity's fold: decayed terms, plain aggregates riding along them (in two phases), and the rest.

    The rest (struct maxima, which a hash aggregation cannot buffer, and the HLL
    sketch), by column name, is one narrow aggregation apart: inside the wide one it
    would force a sort-based aggregation of every decayed sum (measured slower at 10M
    events). ``bench/floors.py`` times each of these families alone.
    """
    terms = {decayed_name(t, h): (F.when(F.col("event_type") == t, F.lit(1.0)), h)
             for t in EVENT_TYPES for h in fc.half_lives}
    carried = [TwoPhase("as_of", F.max("event_ts"), F.max), TwoPhase("last_event_ts", F.max("event_ts"), F.max)]
    carried += [TwoPhase(f"{t}_count", F.count_if(F.col("event_type") == t), F.sum) for t in EVENT_TYPES]
    if entity.name == USER:
        carried += purchase_aggs()
    apart: dict[str, Column] = {}
    if entity.name == ITEM:
        apart = {"latest_category": _latest("category_id"), "latest_price": _latest("price"),
                 "users_hll": F.hll_sketch_agg("user_id", fc.hll_lg_k)}
    return terms, carried, {name: column.alias(name) for name, column in apart.items()}


def merge(a: DataFrame, b: DataFrame, entity: Entity, fc: FeaturesConfig,
          updated_at: datetime | None = None) -> DataFrame:
    """Merge two states of ``entity`` key by key (a key on one side only keeps its state).

    ``updated_at`` stamps every row (None: the later of the two sides' ``updated_at``).
    """
    keys = list(entity.keys)
    on = [F.col(f"l.{k}") == F.col(f"r.{k}") for k in keys]
    cols = memo(("merge", entity.name, fc.model_dump_json()), lambda: _merge_columns(entity))
    stamp = (F.lit(updated_at).cast("timestamp") if updated_at
             else F.greatest(F.col("l.updated_at"), F.col("r.updated_at")))
    merged = a.alias("l").join(b.alias("r"), on, "full_outer").select(*cols, stamp.alias("updated_at"))
    return conform(merged.withColumn(BUCKET, key_bucket(keys, fc)), entity)


def _merge_columns(entity: Entity) -> list[Column]:
    sides = Sides()
    cols = [F.coalesce(sides.l(k), sides.r(k)).alias(k) for k in entity.keys]
    return cols + [c.merge(sides).cast(c.dtype).alias(c.name) for c in entity.columns]


def key_bucket(keys: list[str], fc: FeaturesConfig) -> Column:
    """Hash bucket of a row's key: the feature tables' partition column."""
    return F.pmod(F.xxhash64(*keys), F.lit(fc.key_buckets)).cast("int")


def conform(df: DataFrame, entity: Entity) -> DataFrame:
    """Columns in the stored order and types."""
    schema = entity.schema
    return df.select(*memo(("conform", schema.json()),
                            lambda: [F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields]))


def _latest(value: str) -> Column:
    """The (ts, event_id, value) of the latest event, by ts then event_id, whose ``value`` is not null."""
    entry = F.struct(F.col("event_ts").alias("ts"), F.col("event_id"), F.col(value).alias("value"))
    return F.max(F.when(F.col(value).isNotNull(), entry))

