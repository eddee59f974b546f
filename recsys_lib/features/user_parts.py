"""The user table's columns beyond the common ones, and its roll-up from user x category states.

Recent items, category weights and purchase aggregates; for the full refresh, the
decayed sums and counts rolled up from the user x category states.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from recsys_lib.core.config import FeaturesConfig
from recsys_lib.core.schema import EVENT_TYPES
from recsys_lib.features.decay import TwoPhase, decayed_sums
from recsys_lib.features.definitions import decayed_name, seconds


def purchase_aggs() -> list[TwoPhase]:
    """Spend (price x quantity, quantity defaulting to 1), price sum and priced count over purchases."""
    is_purchase = F.col("event_type") == "purchase"
    priced = is_purchase & F.col("price").isNotNull()
    spend = F.col("price") * F.coalesce(F.col("quantity"), F.lit(1))
    return [
        TwoPhase("purchase_spend", F.sum(F.when(priced, spend)), F.sum, empty=0.0),
        TwoPhase("purchase_price_sum", F.sum(F.when(priced, F.col("price"))), F.sum, empty=0.0),
        TwoPhase("purchase_priced_count", F.count_if(priced), F.sum),
    ]


def user_sums_from_categories(ev: DataFrame, category_states: DataFrame,
                               terms: dict[str, tuple[Column, float]], latest: float) -> DataFrame:
    """The user states' times, counts, decayed sums and purchase aggregates, mostly from user x category states.

    Every event with a category lies in exactly one of its user's (user, category)
    states, so a user's counts are the sum of those states' counts and its decayed
    sums the sum of theirs, each moved to the user's ``as_of``. Only the events
    without a category (every term) and the purchases (the spend) are aggregated
    here. As in :func:`.decay.decayed_sums`'s single pass, every sum is first taken relative to
    ``latest`` (>= every ``_ts``), then moved to the user's ``as_of``: the same
    values as folding the events, up to rounding. Columns as :func:`decayed_sums`.
    """
    def to_latest(ts: Column, h: float) -> Column:
        return F.pow(F.lit(2.0), (ts - F.lit(latest)) / h)

    no_category = F.col("category_id").isNull()
    rolled = category_states.groupBy("user_id").agg(
        F.max("as_of").alias("_c_as_of"), *[F.sum(f"{t}_count").alias(f"_c_{t}_count") for t in EVENT_TYPES],
        *[F.sum(F.col(name) * to_latest(seconds(F.col("as_of")), h)).alias(f"_c_{name}")
          for name, (_, h) in terms.items()])
    purchases = purchase_aggs()
    direct = ev.where(no_category | (F.col("event_type") == "purchase")).groupBy("user_id").agg(
        F.max(F.when(no_category, F.col("event_ts"))).alias("_e_as_of"),
        *[F.count_if(no_category & (F.col("event_type") == t)).alias(f"_e_{t}_count") for t in EVENT_TYPES],
        *[F.sum(F.when(no_category, weight) * to_latest(F.col("_ts"), h)).alias(f"_e_{name}")
          for name, (weight, h) in terms.items()], *[p.partial() for p in purchases])
    both = rolled.join(direct, "user_id", "full_outer").withColumn("as_of", F.greatest("_c_as_of", "_e_as_of"))
    both = both.withColumn("_as_of_s", seconds(F.col("as_of")))

    def total(name: str) -> Column:
        return F.coalesce(F.col(f"_c_{name}"), F.lit(0)) + F.coalesce(F.col(f"_e_{name}"), F.lit(0))

    return both.select(
        "user_id", "_as_of_s", "as_of", F.col("as_of").alias("last_event_ts"),
        *[total(f"{t}_count").alias(f"{t}_count") for t in EVENT_TYPES],
        *[F.coalesce(F.col(p.name), F.lit(0)).alias(p.name) for p in purchases],
        *[(total(name) * F.pow(F.lit(2.0), (F.lit(latest) - F.col("_as_of_s")) / h)).alias(name)
          for name, (_, h) in terms.items()])


#: The recent-items cut looks for each user's n-th newest item among this latest share of the events' span.
RECENT_SCAN_SHARE = 1.0 / 6.0


def _recent_scan_start(span: tuple[float, float] | None) -> datetime | None:
    """Where :func:`_since_nth_newest_item` looks for the cuts: the latest :data:`RECENT_SCAN_SHARE` of ``span``."""
    if span is None:
        return None
    return datetime.fromtimestamp(span[1] - (span[1] - span[0]) * RECENT_SCAN_SHARE, UTC)


def recent_items(ev: DataFrame, fc: FeaturesConfig, *, cutoff: bool = False,
                 span: tuple[float, float] | None = None) -> DataFrame:
    """Per user, the ``fc.recent_items`` newest distinct items as (ts, event_id, item_id), newest first.

    ``cutoff`` first drops events that cannot make the list (:func:`_since_nth_newest_item`),
    looking for the cuts in the latest :data:`RECENT_SCAN_SHARE` of ``span`` when given.
    """
    with_item = ev.where(F.col("item_id").isNotNull())
    if cutoff:
        with_item = _since_nth_newest_item(with_item, fc.recent_items, _recent_scan_start(span))
    entry = F.struct(F.col("event_ts").alias("ts"), F.col("event_id"), F.col("item_id"))
    newest_per_item = with_item.groupBy("user_id", "item_id").agg(F.max(entry).alias("entry"))
    return newest_per_item.groupBy("user_id").agg(
        F.slice(F.sort_array(F.collect_list("entry"), asc=False), 1, fc.recent_items).alias("recent_items"))


def _since_nth_newest_item(ev: DataFrame, n: int, scan_since: datetime | None = None) -> DataFrame:
    """Each user's events no older than the n-th newest of the user's per-item newest times.

    Exact for :func:`recent_items`: every item among a user's ``n`` most recent has
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


def category_weights(ev: DataFrame, fc: FeaturesConfig) -> DataFrame:
    """Per (user, category): ``w`` = sum of type weight x 2^-((as_of - ts) / H), and that ``_as_of_s``."""
    weights = F.create_map(*[x for k, v in fc.affinity_weights.items() for x in (F.lit(k), F.lit(float(v)))])
    with_category = ev.where(F.col("category_id").isNotNull()).withColumn(
        "_w", F.coalesce(weights[F.col("event_type")], F.lit(0.0)))
    return decayed_sums(with_category, ["user_id", "category_id"],
                        {"w": (F.col("_w"), fc.affinity_half_life)}, fc.affinity_half_life)


def category_weights_from_states(category_states: DataFrame, fc: FeaturesConfig) -> DataFrame:
    """:func:`category_weights` from user x category states: sum of type weight x that type's decayed count."""
    h = fc.affinity_half_life
    w = sum((F.lit(float(v)) * F.coalesce(F.col(decayed_name(t, h)), F.lit(0.0))
             for t, v in fc.affinity_weights.items() if t in EVENT_TYPES), F.lit(0.0))
    return category_states.select("user_id", "category_id", w.alias("w"),
                                  seconds(F.col("as_of")).alias("_as_of_s"))


def weights_map(per_category: DataFrame, user_as_of: DataFrame, fc: FeaturesConfig) -> DataFrame:
    """Per user, the category -> weight map, each weight moved from its category's as_of to the user's."""
    moved = per_category.join(user_as_of, "user_id").withColumn(
        "w", F.col("w") * F.pow(F.lit(2.0), -(F.col("_u") - F.col("_as_of_s")) / fc.affinity_half_life))
    return moved.groupBy("user_id").agg(
        F.map_from_entries(F.collect_list(F.struct("category_id", "w"))).alias("category_weights"))


def with_weights_via_latest(state: DataFrame, per_category: DataFrame, latest: float,
                             fc: FeaturesConfig) -> DataFrame:
    """:func:`weights_map` joined to ``state`` without first computing each user's ``as_of``.

    Each weight is moved to ``latest`` (>= every ``_as_of_s``) before the per-user map is
    built, then the whole map to the user's ``as_of``: the same values up to rounding.
    """
    h = fc.affinity_half_life
    to_latest = per_category.withColumn(
        "w", F.col("w") * F.pow(F.lit(2.0), (F.col("_as_of_s") - F.lit(latest)) / h))
    maps = to_latest.groupBy("user_id").agg(
        F.map_from_entries(F.collect_list(F.struct("category_id", "w"))).alias("category_weights"))
    factor = F.pow(F.lit(2.0), (F.lit(latest) - seconds(F.col("as_of"))) / h)
    return state.join(maps, "user_id", "left").withColumn(
        "category_weights", F.transform_values("category_weights", lambda _k, v: v * factor))
