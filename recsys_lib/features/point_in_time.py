"""Point-in-time-correct training rows: features as they stood strictly before each label.

For every labelled event (user u, item i, time t) the row carries

* ``u_*`` / ``i_*``: counts of each event type over u's (i's) events with ``ts < t``;
  decayed sums over the same events, moved to ``t`` (``sum 2^-((t - ts) / H)``),
  as serving computes them with ``load_features(at=now)``; and the prefix's ``as_of``;
* ``u_recent_items``: u's most recent distinct items before ``t``, newest first;
* ``u_top_categories``: u's top-K (category_id, weight) by affinity before ``t``, the
  same definition as ``top_categories`` of ``load_features``.

With ``feature_time="day_start"`` the time ``t`` of a label's features is the
midnight (UTC) starting its day instead of the label's own time.

Events at exactly ``t`` (including the label itself) are excluded, so nothing from
the label's moment or later can leak in.

Scale: everything is window frames over one shuffle per key, with no per-row
Python. A decayed sum is computed without overflow by cutting time into blocks
of 256 half-lives: the label's own block (a window frame) plus the previous
block's total, each rescaled. Terms older than that (weight below 2^-256) are
dropped. ``u_recent_items`` looks back over the user's last ``recent_lookback``
events; it holds fewer items only when those events repeat items.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from recsys_lib.core.config import FeaturesConfig
from recsys_lib.core.schema import EVENT_TYPES
from recsys_lib.features.definitions import decayed_name

BLOCK_HALF_LIVES = 256
MICROS = 1_000_000.0


def training_rows(events: DataFrame, label_types: list[str], fc: FeaturesConfig, *,
                  first_day: date | None = None, last_day: date | None = None,
                  recent_lookback: int = 100, feature_time: str = "event") -> DataFrame:
    """One row per event whose type is in ``label_types``, with point-in-time features.

    Args:
        events: The ``events`` table (all history: features need events before the labels).
        label_types: Event types that make a training example.
        fc: Half-lives and the recent-items length.
        first_day: Only labels on or after this day (UTC).
        last_day: Only labels on or before this day (UTC).
        recent_lookback: Events looked back over for ``u_recent_items``.
        feature_time: ``event``: features strictly before the label event; ``day_start``:
            strictly before midnight (UTC) of the label's day, which matches a model
            that recommends for the coming day(s) from features at the start.

    """
    if feature_time not in ("event", "day_start"):
        raise ValueError(f"feature_time must be event or day_start, got {feature_time!r}")
    ev = events.select("event_id", "user_id", "item_id", "category_id", "event_type", "event_ts", "price",
                       F.unix_micros("event_ts").alias("_t"))
    labels = ev.where(F.col("event_type").isin(*label_types) & F.col("item_id").isNotNull())
    if first_day is not None:
        labels = labels.where(F.to_date("event_ts") >= F.lit(first_day))
    if last_day is not None:
        labels = labels.where(F.to_date("event_ts") <= F.lit(last_day))
    if feature_time == "day_start":
        labels = labels.withColumn("_t", F.unix_micros(F.date_trunc("day", "event_ts")))
    user = _prefix_features(ev, labels, "user_id", "u_", fc)
    item = _prefix_features(ev.where(F.col("item_id").isNotNull()), labels, "item_id", "i_", fc)
    recent = _recent_items(ev, labels, fc.recent_items, recent_lookback)
    affinity = _category_affinity(ev, labels, fc)
    base = labels.select("event_id", "event_ts", "user_id", "item_id", "category_id",
                         F.col("event_type").alias("label_type"), "price",
                         F.to_date("event_ts").alias("label_date"))
    return (base.join(user, "event_id").join(item, "event_id").join(recent, "event_id", "left")
            .join(affinity, "event_id", "left"))


def features_at(events: DataFrame, keys: DataFrame, key: str, at_micros: int, fc: FeaturesConfig,
                recent_lookback: int = 100) -> DataFrame:
    """Features of each ``key`` value in ``keys`` as they stood strictly before ``at_micros``.

    The same definitions as :func:`training_rows` (so a model sees at serving or
    evaluation time exactly what it saw in training): ``u_*`` columns plus
    ``u_recent_items`` for ``key="user_id"``, ``i_*`` columns for ``key="item_id"``.
    """
    if key not in ("user_id", "item_id"):
        raise ValueError(f"features_at: key must be user_id or item_id, got {key!r}")
    ev = events.select("event_id", "user_id", "item_id", "category_id", "event_type", "event_ts", "price",
                       F.unix_micros("event_ts").alias("_t"))
    probes = keys.select(key).distinct().select(
        key, F.lit(at_micros).cast("long").alias("_t"), F.concat(F.lit("@"), F.col(key)).alias("event_id"))
    if key == "item_id":
        ev = ev.where(F.col("item_id").isNotNull())
        out = _prefix_features(ev, probes, key, "i_", fc)
    else:
        out = (_prefix_features(ev, probes, key, "u_", fc)
               .join(_recent_items(ev, probes, fc.recent_items, recent_lookback), "event_id", "left")
               .join(_category_affinity(ev, probes, fc), "event_id", "left"))
    return out.join(probes.select("event_id", key), "event_id").drop("event_id")


def _stream(ev: DataFrame, labels: DataFrame, key: str) -> DataFrame:
    """Events and label markers of one key in one frame (``_label`` is the label's event_id)."""
    events_part = ev.select(key, "_t", "event_type", F.lit(None).cast("string").alias("_label"))
    labels_part = labels.select(key, "_t", F.lit(None).cast("string").alias("event_type"),
                                F.col("event_id").alias("_label"))
    return events_part.unionByName(labels_part)


def _prefix_features(ev: DataFrame, labels: DataFrame, key: str, prefix: str, fc: FeaturesConfig) -> DataFrame:
    rows = _stream(ev, labels, key)
    before = Window.partitionBy(key).orderBy("_t").rangeBetween(Window.unboundedPreceding, -1)
    is_event = F.col("_label").isNull()
    cols: list[Column] = [F.max(F.when(is_event, F.col("_t"))).over(before).alias("_as_of_t")]
    for etype in EVENT_TYPES:
        cols.append(F.sum(F.when(F.col("event_type") == etype, 1).otherwise(0)).over(before)
                    .cast("long").alias(f"{prefix}{etype}_count"))
    out = rows.select(key, "_t", "_label", *cols)
    for h in fc.half_lives:
        out = out.join(_decayed_at_label(rows, key, prefix, h), ["_label"], "left")
    features = [c for c in out.columns if c.startswith(prefix)]
    return out.where(F.col("_label").isNotNull()).select(
        F.col("_label").alias("event_id"), F.timestamp_micros("_as_of_t").alias(f"{prefix}as_of"), *features)


def _decayed_at_label(rows: DataFrame, key: str, prefix: str, half_life: float) -> DataFrame:
    """``sum 2^-((t - ts)/H)`` over each label's strictly earlier events of every type, per half-life."""
    values = {f"{prefix}{decayed_name(t, half_life)}": F.when(F.col("event_type") == t, F.lit(1.0))
              for t in EVENT_TYPES}
    return _decayed_prefix(rows, [key], values, half_life).drop(key)


def _decayed_prefix(rows: DataFrame, keys: list[str], values: dict[str, Column], half_life: float) -> DataFrame:
    """For each label row (``_label`` set): ``sum value * 2^-((t - ts)/H)`` over its keys' strictly earlier events.

    Without overflow: time is cut into blocks of 256 half-lives; a label sums its own
    block (a window frame) and the previous block's total, each rescaled.
    """
    block_us = BLOCK_HALF_LIVES * half_life * MICROS
    blocked = rows.withColumn("_b", F.floor(F.col("_t") / block_us)).withColumn(
        "_w", F.pow(F.lit(2.0), (F.col("_t") - F.col("_b") * block_us) / (half_life * MICROS)))
    same_block = Window.partitionBy(*keys, "_b").orderBy("_t").rangeBetween(Window.unboundedPreceding, -1)
    names = list(values)
    sums = [F.coalesce(F.sum(values[n] * F.col("_w")).over(same_block), F.lit(0.0)).alias(f"_s{i}")
            for i, n in enumerate(names)]
    current = blocked.select(*keys, "_b", "_t", "_label", *sums).where(F.col("_label").isNotNull())
    totals = blocked.where(F.col("_label").isNull()).groupBy(*keys, "_b").agg(
        *[F.sum(values[n] * F.col("_w")).alias(f"_p{i}") for i, n in enumerate(names)])
    previous = totals.withColumn("_b", F.col("_b") + 1)
    joined = current.join(previous, [*keys, "_b"], "left")
    scale_same = F.pow(F.lit(2.0), (F.col("_b") * block_us - F.col("_t")) / (half_life * MICROS))
    scale_prev = F.pow(F.lit(2.0), ((F.col("_b") - 1) * block_us - F.col("_t")) / (half_life * MICROS))
    return joined.select("_label", *keys, *[
        (F.col(f"_s{i}") * scale_same + F.coalesce(F.col(f"_p{i}"), F.lit(0.0)) * scale_prev).alias(n)
        for i, n in enumerate(names)])


def _category_affinity(ev: DataFrame, labels: DataFrame, fc: FeaturesConfig) -> DataFrame:
    """``u_top_categories``: the user's top-K categories by decayed, type-weighted counts before each label.

    The same definition as the stored ``category_weights`` read through ``top_categories``:
    weight = sum over the user's earlier events in the category of
    ``affinity_weights[type] * 2^-((t - ts) / affinity_half_life)``.
    """
    weight = F.coalesce(*[F.when(F.col("event_type") == t, F.lit(float(w)))
                          for t, w in fc.affinity_weights.items()], F.lit(0.0))
    cat_events = ev.where(F.col("category_id").isNotNull()).select(
        "user_id", "category_id", "_t", weight.alias("_v"), F.lit(None).cast("string").alias("_label"))
    pairs = cat_events.select("user_id", "category_id").distinct()
    probes = labels.select("user_id", "_t", F.col("event_id").alias("_label")).join(pairs, "user_id").select(
        "user_id", "category_id", "_t", F.lit(None).cast("double").alias("_v"), "_label")
    sums = _decayed_prefix(cat_events.unionByName(probes), ["user_id", "category_id"], {"_a": F.col("_v")},
                           fc.affinity_half_life)
    ranked = F.sort_array(F.collect_list(F.struct(F.col("_a").alias("weight"), "category_id")), asc=False)
    return sums.where(F.col("_a") > 0).groupBy("_label").agg(
        F.transform(F.slice(ranked, 1, fc.affinity_top_k),
                    lambda x: F.struct(x["category_id"].alias("category_id"), x["weight"].alias("weight"))
                    ).alias("u_top_categories")).withColumnRenamed("_label", "event_id")


def _recent_items(ev: DataFrame, labels: DataFrame, limit: int, lookback: int) -> DataFrame:
    """``u_recent_items`` before each label, from the user's last ``lookback`` events strictly earlier.

    Events are put in one total order per user (time, then event_id), so the lookback
    boundary is the same however the rows are partitioned or sorted: ``_k`` numbers a
    user's events and gives a label the number of events before it; a label's frame is
    the events numbered ``_k - lookback + 1`` .. ``_k``.
    """
    events_part = ev.where(F.col("item_id").isNotNull()).select(
        "user_id", "_t", F.lit(1).alias("_order"), F.col("event_id").alias("_tie"),
        F.struct(F.col("_t"), "event_id", "item_id").alias("_entry"), F.lit(None).cast("string").alias("_label"))
    labels_part = labels.select("user_id", "_t", F.lit(0).alias("_order"), F.col("event_id").alias("_tie"),
                                F.lit(None).cast("struct<_t:bigint,event_id:string,item_id:string>").alias("_entry"),
                                F.col("event_id").alias("_label"))
    # labels sort before events of the same instant, so a label's _k counts only strictly earlier events
    running = Window.partitionBy("user_id").orderBy("_t", "_order", "_tie").rowsBetween(
        Window.unboundedPreceding, Window.currentRow)
    numbered = events_part.unionByName(labels_part).withColumn(
        "_k", F.count("_entry").over(running))
    frame = Window.partitionBy("user_id").orderBy("_k").rangeBetween(-(lookback - 1), 0)
    stream = numbered.withColumn("_prior", F.collect_list("_entry").over(frame))
    newest_first = F.transform(F.sort_array(F.filter("_prior", lambda e: e["_t"] < F.col("_t")), asc=False),
                               lambda e: e["item_id"])
    return stream.where(F.col("_label").isNotNull()).select(
        F.col("_label").alias("event_id"), F.slice(F.array_distinct(newest_first), 1, limit).alias("u_recent_items"))
