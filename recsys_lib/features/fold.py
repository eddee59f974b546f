"""Fold events into feature states, and merge two states: plain DataFrame transforms.

``fold`` serves both the full refresh (all events) and incremental updates (a
micro-batch); ``merge`` combines a stored state with a batch's state. For any
split of an event multiset into batches, folding each batch and merging the
results equals folding everything at once (see tests/spark/test_features_exactness.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from pyspark import SparkContext
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from recsys_lib.core.config import FeaturesConfig
from recsys_lib.core.schema import EVENT_TYPES
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

T_ = TypeVar("T_")
_MEMO: dict[tuple[Any, ...], Any] = {}


def _memo(key: tuple[Any, ...], build: Callable[[], T_]) -> T_:
    """Column expressions built once per Spark application and ``key`` (which must fix them).

    Building a wide fold or merge costs thousands of Py4J calls; a micro-batch
    reuses the (unresolved, data-independent) expressions of the previous one.
    """
    context = SparkContext._active_spark_context
    full = (context.applicationId if context else None, *key)
    if full not in _MEMO:
        _MEMO[full] = build()
    return cast(T_, _MEMO[full])


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
            weights are then derived from them instead of from a second pass over the events
            (same values up to rounding); ignored unless the affinity half-life is one of
            ``fc.half_lives``.
        large_input: Plan for many events per key (the full refresh): before ranking a
            user's recent items, drop the events that cannot make the list
            (:func:`_since_nth_newest_item`), finding where to cut in the latest
            :data:`RECENT_SCAN_SHARE` of ``span`` when given. Same result; cheaper over
            many events per user, dearer over a small batch.
        span: The earliest and latest ``event_ts`` of ``events`` in epoch seconds
            (:func:`event_bounds`), when the caller has them (the full refresh does). Within
            :data:`SINGLE_PASS_HALF_LIVES` smallest half-lives, the decayed sums then take one
            aggregation instead of two (:func:`decayed_sums`).

    """
    keys = list(entity.keys)
    ev = events
    if entity.name == ITEM:
        ev = ev.where(F.col("item_id").isNotNull())
    if entity.name == USER_CATEGORY:
        ev = ev.where(F.col("category_id").isNotNull())
    ev = ev.withColumn("_ts", seconds(F.col("event_ts")))
    memo_key = ("fold", entity.name, fc.model_dump_json())
    terms, carried, apart = _memo(memo_key, lambda: _fold_columns(entity, fc))
    state = decayed_sums(ev, keys, terms, min(fc.half_lives), carried=carried, memo_key=memo_key,
                         span=span).drop("_as_of_s")
    if apart:
        state = state.join(ev.groupBy(*keys).agg(*apart), keys)
    if entity.name == USER:
        user_as_of = state.select("user_id", seconds(F.col("as_of")).alias("_u"))
        if category_states is not None and fc.affinity_half_life in fc.half_lives:
            per_category = _category_weights_from_states(category_states, fc)
        else:
            per_category = _category_weights(ev, fc)
        state = state.join(_recent_items(ev, fc, cutoff=large_input, span=span), "user_id", "left").join(
            _weights_map(per_category, user_as_of, fc), "user_id", "left")
        state = state.withColumn("recent_items", F.coalesce("recent_items", F.array())).withColumn(
            "category_weights", F.coalesce("category_weights", F.create_map()))
    stamp = F.lit(updated_at).cast("timestamp") if updated_at else F.current_timestamp()
    state = state.withColumn("updated_at", stamp).withColumn(BUCKET, key_bucket(keys, fc))
    return conform(state, entity)


@dataclass(frozen=True)
class TwoPhase:
    """An aggregate computed in two steps: ``first`` over events, then ``then`` over the partial results.

    ``empty`` (if not None) replaces a null result: the value when no event matched.
    """

    name: str
    first: Column
    then: Callable[[Column], Column]
    empty: Any = None

    def partial(self) -> Column:
        """The first step, aliased to ``name``."""
        return self.first.alias(self.name)

    def final(self) -> Column:
        """The second step over the partial column, aliased to ``name``."""
        return self._filled(self.then(F.col(self.name))).alias(self.name)

    def once(self) -> Column:
        """The whole aggregate in one step (``first`` over all the events), aliased to ``name``."""
        return self._filled(self.first).alias(self.name)

    def _filled(self, column: Column) -> Column:
        return column if self.empty is None else F.coalesce(column, F.lit(self.empty))


def _fold_columns(entity: Entity, fc: FeaturesConfig) -> tuple[dict[str, tuple[Column, float]], list[TwoPhase],
                                                                list[Column]]:
    """One entity's fold: decayed terms, plain aggregates riding along them (in two phases), and the rest.

    The rest (struct maxima, which a hash aggregation cannot buffer, and the HLL
    sketch) is one narrow aggregation apart: inside the wide one it would force a
    sort-based aggregation of every decayed sum (measured slower at 10M events).
    """
    terms = {decayed_name(t, h): (F.when(F.col("event_type") == t, F.lit(1.0)), h)
             for t in EVENT_TYPES for h in fc.half_lives}
    carried = [TwoPhase("as_of", F.max("event_ts"), F.max), TwoPhase("last_event_ts", F.max("event_ts"), F.max)]
    carried += [TwoPhase(f"{t}_count", F.count_if(F.col("event_type") == t), F.sum) for t in EVENT_TYPES]
    if entity.name == USER:
        carried += _purchase_aggs()
    apart: list[Column] = []
    if entity.name == ITEM:
        apart = [_latest("category_id").alias("latest_category"), _latest("price").alias("latest_price"),
                  F.hll_sketch_agg("user_id", fc.hll_lg_k).alias("users_hll")]
    return terms, carried, apart


def event_bounds(events: DataFrame) -> tuple[datetime | None, tuple[float, float] | None]:
    """The latest ``event_ts`` of ``events``, and its ``span`` for :func:`fold` (None, None when empty).

    ``span`` is the earliest and latest ``event_ts`` in epoch seconds, computed exactly as
    the fold computes each event's time.
    """
    ts = seconds(F.col("event_ts"))
    row = events.agg(F.max("event_ts"), F.min(ts), F.max(ts)).first()
    if row is None or row[0] is None:
        return None, None
    return row[0], (float(row[1]), float(row[2]))


#: The single-pass decayed sums need every event within this many smallest half-lives of the latest.
SINGLE_PASS_HALF_LIVES = 1000.0


def decayed_sums(ev: DataFrame, keys: list[str], terms: dict[str, tuple[Column, float]],
                 min_half_life: float, carried: Sequence[TwoPhase] = (),
                 memo_key: tuple[Any, ...] | None = None, span: tuple[float, float] | None = None) -> DataFrame:
    """Per key, ``sum weight * 2^-((as_of - ts) / H)`` for each term, ``as_of`` being the key's max ``_ts``.

    The result also carries that ``as_of`` (epoch seconds) as ``_as_of_s``, and
    one column per ``carried`` aggregate. With ``memo_key`` (a key that fixes
    ``terms`` and ``carried``) the expressions are built once and reused.

    When ``span`` (earliest, latest ``_ts`` of ``ev``) is at most
    :data:`SINGLE_PASS_HALF_LIVES` x ``min_half_life`` wide, one hash aggregation per key
    sums ``weight * 2^((ts - latest) / H)``: every term lies in [2^-1000, 1], a normal
    double, so nothing underflows, and multiplying by ``2^((latest - as_of) / H)`` (at
    most 2^1000) moves the sum to ``as_of``. Otherwise two hash aggregations: first per
    (key, time block of 256 x the smallest half-life), summing
    ``weight * 2^((ts - block_start) / H)`` (at most 2^256: no overflow); then per key,
    moving each block's sum to ``as_of``. Both equal the direct sum up to rounding. The
    carried aggregates ride along, so the events are scanned and shuffled once.
    """
    if span is not None and span[1] - span[0] <= SINGLE_PASS_HALF_LIVES * min_half_life:
        return _decayed_sums_single_pass(ev, keys, terms, span[1], carried)
    block = 256.0 * min_half_life

    def columns() -> tuple[list[Column], list[Column]]:
        start = F.col("_b") * block
        first = [F.max("_ts").alias("_m"), *[c.partial() for c in carried],
                 *[F.sum(weight * F.pow(F.lit(2.0), (F.col("_ts") - start) / h)).alias(name)
                   for name, (weight, h) in terms.items()]]
        second = [F.max("_a").alias("_as_of_s"), *[c.final() for c in carried], *[
            F.coalesce(F.sum(F.col(name) * F.pow(F.lit(2.0), (F.col("_b") * block - F.col("_a")) / h)), F.lit(0.0))
            .alias(name) for name, (_, h) in terms.items()]]
        return first, second

    first, second = _memo(("decayed", *memo_key, tuple(keys), block), columns) if memo_key else columns()
    blocked = ev.withColumn("_b", F.floor(F.col("_ts") / block))
    partial = blocked.groupBy(*keys, "_b").agg(*first)
    moved = partial.withColumn("_a", F.max("_m").over(Window.partitionBy(*keys)))
    return moved.groupBy(*keys).agg(*second)


def _decayed_sums_single_pass(ev: DataFrame, keys: list[str], terms: dict[str, tuple[Column, float]],
                              latest: float, carried: Sequence[TwoPhase]) -> DataFrame:
    """:func:`decayed_sums` in one aggregation, every term taken relative to ``latest`` (>= every ``_ts``)."""
    sums = [F.sum(weight * F.pow(F.lit(2.0), (F.col("_ts") - F.lit(latest)) / h)).alias(name)
            for name, (weight, h) in terms.items()]
    state = ev.groupBy(*keys).agg(F.max("_ts").alias("_as_of_s"), *[c.once() for c in carried], *sums)
    return state.withColumns({
        name: F.coalesce(F.col(name) * F.pow(F.lit(2.0), (F.lit(latest) - F.col("_as_of_s")) / h), F.lit(0.0))
        for name, (_, h) in terms.items()})


def merge(a: DataFrame, b: DataFrame, entity: Entity, fc: FeaturesConfig,
          updated_at: datetime | None = None) -> DataFrame:
    """Merge two states of ``entity`` key by key (a key on one side only keeps its state).

    ``updated_at`` stamps every row (None: the later of the two sides' ``updated_at``).
    """
    keys = list(entity.keys)
    on = [F.col(f"l.{k}") == F.col(f"r.{k}") for k in keys]
    cols = _memo(("merge", entity.name, fc.model_dump_json()), lambda: _merge_columns(entity))
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
    return df.select(*_memo(("conform", schema.json()),
                            lambda: [F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields]))


def _purchase_aggs() -> list[TwoPhase]:
    is_purchase = F.col("event_type") == "purchase"
    priced = is_purchase & F.col("price").isNotNull()
    spend = F.col("price") * F.coalesce(F.col("quantity"), F.lit(1))
    return [
        TwoPhase("purchase_spend", F.sum(F.when(priced, spend)), F.sum, empty=0.0),
        TwoPhase("purchase_price_sum", F.sum(F.when(priced, F.col("price"))), F.sum, empty=0.0),
        TwoPhase("purchase_priced_count", F.count_if(priced), F.sum),
    ]


def _latest(value: str) -> Column:
    """The (ts, event_id, value) of the latest event, by ts then event_id, whose ``value`` is not null."""
    entry = F.struct(F.col("event_ts").alias("ts"), F.col("event_id"), F.col(value).alias("value"))
    return F.max(F.when(F.col(value).isNotNull(), entry))


#: The recent-items cut looks for each user's n-th newest item among this latest share of the events' span.
RECENT_SCAN_SHARE = 1.0 / 6.0


def _recent_scan_start(span: tuple[float, float] | None) -> datetime | None:
    """Where :func:`_since_nth_newest_item` looks for the cuts: the latest :data:`RECENT_SCAN_SHARE` of ``span``."""
    if span is None:
        return None
    return datetime.fromtimestamp(span[1] - (span[1] - span[0]) * RECENT_SCAN_SHARE, UTC)


def _recent_items(ev: DataFrame, fc: FeaturesConfig, *, cutoff: bool = False,
                  span: tuple[float, float] | None = None) -> DataFrame:
    with_item = ev.where(F.col("item_id").isNotNull())
    if cutoff:
        with_item = _since_nth_newest_item(with_item, fc.recent_items, _recent_scan_start(span))
    entry = F.struct(F.col("event_ts").alias("ts"), F.col("event_id"), F.col("item_id"))
    newest_per_item = with_item.groupBy("user_id", "item_id").agg(F.max(entry).alias("entry"))
    return newest_per_item.groupBy("user_id").agg(
        F.slice(F.sort_array(F.collect_list("entry"), asc=False), 1, fc.recent_items).alias("recent_items"))


def _since_nth_newest_item(ev: DataFrame, n: int, scan_since: datetime | None = None) -> DataFrame:
    """Each user's events no older than the n-th newest of the user's per-item newest times.

    Exact for :func:`_recent_items`: every item among a user's ``n`` most recent has
    its newest time at or after that cut, and its newest events survive. It replaces
    a sort-based aggregation of every event by a hash aggregation of (user, item)
    times and a window over those pairs.

    With ``scan_since``, the cuts come from the events at or after it only (Parquet
    skips the older row groups). A user with ``n`` distinct items there gets the same
    cut as from all events: those items all have their newest time there, and any
    other item's newest time is earlier. A user with fewer gets no cut and keeps every
    event: still exact, only less is dropped.

    Items are grouped by a 64-bit hash of ``item_id``, cheaper than the string. A
    collision merges two items' times into their maximum, which can only move the cut
    earlier: more events are kept, never fewer, so the result stays exact. (Users keep
    their ids: merging two users could move a cut later.)
    """
    scanned = ev if scan_since is None else ev.where(F.col("event_ts") >= F.lit(scan_since))
    newest = scanned.groupBy("user_id", F.xxhash64("item_id").alias("_item")).agg(F.max("event_ts").alias("_newest"))
    nth = F.row_number().over(Window.partitionBy("user_id").orderBy(F.col("_newest").desc()))
    cuts = newest.withColumn("_n", nth).where(F.col("_n") == n).select("user_id", F.col("_newest").alias("_cut"))
    kept = ev.join(F.broadcast(cuts), "user_id", "left")  # one row per user
    return kept.where(F.col("_cut").isNull() | (F.col("event_ts") >= F.col("_cut"))).drop("_cut")


def _category_weights(ev: DataFrame, fc: FeaturesConfig) -> DataFrame:
    """Per (user, category): ``w`` = sum of type weight x 2^-((as_of - ts) / H), and that ``_as_of_s``."""
    weights = F.create_map(*[x for k, v in fc.affinity_weights.items() for x in (F.lit(k), F.lit(float(v)))])
    with_category = ev.where(F.col("category_id").isNotNull()).withColumn(
        "_w", F.coalesce(weights[F.col("event_type")], F.lit(0.0)))
    return decayed_sums(with_category, ["user_id", "category_id"],
                        {"w": (F.col("_w"), fc.affinity_half_life)}, fc.affinity_half_life)


def _category_weights_from_states(category_states: DataFrame, fc: FeaturesConfig) -> DataFrame:
    """:func:`_category_weights` from user x category states: sum of type weight x that type's decayed count."""
    h = fc.affinity_half_life
    w = sum((F.lit(float(v)) * F.coalesce(F.col(decayed_name(t, h)), F.lit(0.0))
             for t, v in fc.affinity_weights.items() if t in EVENT_TYPES), F.lit(0.0))
    return category_states.select("user_id", "category_id", w.alias("w"),
                                  seconds(F.col("as_of")).alias("_as_of_s"))


def _weights_map(per_category: DataFrame, user_as_of: DataFrame, fc: FeaturesConfig) -> DataFrame:
    """Per user, the category -> weight map, each weight moved from its category's as_of to the user's."""
    moved = per_category.join(user_as_of, "user_id").withColumn(
        "w", F.col("w") * F.pow(F.lit(2.0), -(F.col("_u") - F.col("_as_of_s")) / fc.affinity_half_life))
    return moved.groupBy("user_id").agg(
        F.map_from_entries(F.collect_list(F.struct("category_id", "w"))).alias("category_weights"))
