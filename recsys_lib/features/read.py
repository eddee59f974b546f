"""Read-time features: stored states finalised at a time ``t``.

For ``t`` at or after a row's ``as_of``:

* every ``T_decayed_H`` is moved to ``t``: multiplied by ``2^-((t - as_of) / H)``;
* ``ctr = (click_count + m*k) / (view_count + k)`` and
  ``cvr = (purchase_count + m*k) / (click_count + k)`` with configured prior mean
  ``m`` and strength ``k``;
* ``recency_seconds = t - last_event_ts``;
* users also get ``recent_item_ids``, ``top_categories`` (top-K category weights
  decayed to ``t``) and ``avg_purchase_price``; items get ``category_id``,
  ``price`` and ``distinct_users`` (the HLL estimate).
"""

from __future__ import annotations

from datetime import UTC, datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recsys_lib.core.config import FeaturesConfig
from recsys_lib.features.definitions import ITEM, USER, Entity, decayed_columns, seconds

#: Documentation of the read-time columns, for the catalogue.
READ_TIME_DOCS: dict[str, str] = {
    "features_at": "The time t the read-time features were computed for.",
    "T_decayed_H": "Stored decayed sum moved to t: x 2^-((t - as_of) / H).",
    "ctr": "Smoothed click-through rate: (click_count + m*k) / (view_count + k).",
    "cvr": "Smoothed conversion rate: (purchase_count + m*k) / (click_count + k).",
    "recency_seconds": "t - last_event_ts in seconds.",
    "recent_item_ids (user)": "Item ids of recent_items, newest first.",
    "top_categories (user)": "Top-K (category_id, weight) of category_weights moved to t, largest first.",
    "avg_purchase_price (user)": "purchase_price_sum / purchase_priced_count (null without priced purchases).",
    "category_id (item)": "latest_category.value.",
    "price (item)": "latest_price.value.",
    "distinct_users (item)": "HLL estimate of distinct users.",
}


def finalise(states: DataFrame, entity: Entity, fc: FeaturesConfig, at: datetime | None = None) -> DataFrame:
    """Add the read-time features of ``entity`` at time ``at`` (default: now, UTC)."""
    at = at or datetime.now(UTC)
    t = F.lit(at).cast("timestamp")
    t_s = seconds(t)
    age = t_s - seconds(F.col("as_of"))
    df = states.withColumn("features_at", t)
    for name, h in decayed_columns(fc).items():
        df = df.withColumn(name, F.col(name) * _decay(age, h))
    df = df.withColumn("ctr", _smoothed("click_count", "view_count", fc.ctr_prior_mean, fc.ctr_prior_strength))
    df = df.withColumn("cvr", _smoothed("purchase_count", "click_count", fc.cvr_prior_mean, fc.cvr_prior_strength))
    df = df.withColumn("recency_seconds", t_s - seconds(F.col("last_event_ts")))
    if entity.name == USER:
        factor = _decay(age, fc.affinity_half_life)
        ranked = F.sort_array(F.transform(F.map_entries("category_weights"),
                                          lambda e: F.struct((e["value"] * factor).alias("weight"),
                                                             e["key"].alias("category_id"))), asc=False)
        df = (df.withColumn("recent_item_ids", F.transform("recent_items", lambda x: x["item_id"]))
              .withColumn("top_categories", F.transform(F.slice(ranked, 1, fc.affinity_top_k),
                                                        lambda x: F.struct(x["category_id"].alias("category_id"),
                                                                           x["weight"].alias("weight"))))
              .withColumn("avg_purchase_price", F.when(F.col("purchase_priced_count") > 0,
                                                       F.col("purchase_price_sum") / F.col("purchase_priced_count"))))
    if entity.name == ITEM:
        df = (df.withColumn("category_id", F.col("latest_category.value"))
              .withColumn("price", F.col("latest_price.value"))
              .withColumn("distinct_users", F.hll_sketch_estimate("users_hll")))
    return df


def _decay(age_seconds: Column, half_life: float) -> Column:
    return F.pow(F.lit(2.0), -age_seconds / half_life)


def _smoothed(successes: str, trials: str, mean: float, strength: float) -> Column:
    return (F.col(successes) + F.lit(mean * strength)) / (F.col(trials) + F.lit(strength))
