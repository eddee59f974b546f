"""The temporal holdout every model is judged on.

With cutoff D (midnight UTC starting the last ``holdout_days`` days that have labels):

* the catalogue is every item with an event before D, with its category, latest
  price and point-in-time features at D;
* holdout users are users with a label event (``train.label_types``) on or after
  D; their truth is the set of catalogue items they labelled from D on (items
  first seen after D cannot be retrieved by any model, so they are left out);
* their query features are the point-in-time features at D (the same code as the
  training rows), ``purchased`` lists what they bought before D and ``seen`` every
  item they had any event with before D;
* ``history`` holds the labelled interactions before D, for the baselines.

Models train on labels before D only, so nothing from the holdout leaks in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recsys_lib.core.config import FeaturesConfig
from recsys_lib.features.point_in_time import features_at


@dataclass
class Holdout:
    """Holdout users, their truth, the catalogue and the history before the cutoff."""

    cutoff: datetime
    items: pd.DataFrame
    users: pa.Table
    truth: list[set[int]]
    purchased: list[list[int]]
    history: pd.DataFrame
    train_users: pd.Index
    seen: list[list[int]] = field(default_factory=list)

    def exclusions(self, users: np.ndarray, *, purchased: bool, seen: bool) -> list[list[int]] | None:
        """Catalogue indices to drop from each user's ranking: bought before D, or (``seen``) any event before D."""
        if seen:
            return [self.seen[u] for u in users]
        return [self.purchased[u] for u in users] if purchased else None

    @property
    def item_ids(self) -> pd.Index:
        """Catalogue item ids in index order."""
        return pd.Index(self.items["item_id"])


def holdout_cutoff(events: DataFrame, label_types: list[str], holdout_days: int) -> datetime:
    """Midnight UTC starting the last ``holdout_days`` days with label events.

    Raises:
        ValueError: If there are no label events, or too few days for a holdout.

    """
    days = [r[0] for r in events.where(F.col("event_type").isin(*label_types))
            .select(F.to_date("event_ts").alias("d")).distinct().orderBy("d").collect()]
    if len(days) <= holdout_days:
        raise ValueError(f"{len(days)} days have {label_types} events; a holdout of {holdout_days} day(s) needs more")
    return datetime.combine(days[-1] - timedelta(days=holdout_days - 1), time(), tzinfo=UTC)


def catalogue(events: DataFrame, before: datetime, fc: FeaturesConfig) -> DataFrame:
    """Items seen before ``before``: latest category and price, and ``i_*`` features at ``before``."""
    at_us = int(before.timestamp() * 1_000_000)
    prior = events.where((F.col("event_ts") < F.lit(before)) & F.col("item_id").isNotNull())

    def latest(column: str) -> Column:
        # the value of the newest event (by time, then event_id) that has one: one answer however rows are split
        stamped = F.struct("event_ts", "event_id", F.col(column).alias("v"))
        return F.max(F.when(F.col(column).isNotNull(), stamped))["v"].alias(column)

    meta = prior.groupBy("item_id").agg(latest("category_id"), latest("price"))
    return meta.join(features_at(events, meta, "item_id", at_us, fc), "item_id").orderBy("item_id")


def build_holdout(events: DataFrame, label_types: list[str], cutoff: datetime, fc: FeaturesConfig) -> Holdout:
    """Collect the holdout for ``cutoff`` (see the module docstring)."""
    at_us = int(cutoff.timestamp() * 1_000_000)
    items = _pandas(catalogue(events, cutoff, fc).toPandas())
    ids = pd.Index(items["item_id"])
    labels = events.where(F.col("event_type").isin(*label_types) & F.col("item_id").isNotNull())
    after = _pandas(labels.where(F.col("event_ts") >= F.lit(cutoff)).select("user_id", "item_id").distinct()
                    .toPandas())
    after = after[ids.get_indexer(after["item_id"]) >= 0]
    users = sorted(after["user_id"].unique())
    user_keys = events.sparkSession.createDataFrame(pd.DataFrame({"user_id": users}), "user_id string")
    query = features_at(events, user_keys, "user_id", at_us, fc).toArrow()
    order = pd.Index(query.column("user_id").to_pylist())
    query = query.take(pa.array(order.get_indexer(users)))
    truth_by_user = after.assign(i=ids.get_indexer(after["item_id"])).groupby("user_id")["i"].apply(set)
    before = events.where(F.col("event_ts") < F.lit(cutoff))
    mine = before.where(F.col("user_id").isin(users) & F.col("item_id").isNotNull())
    bought_by_user = _indices_by_user(mine.where(F.col("event_type") == "purchase"), ids)
    seen_by_user = _indices_by_user(mine, ids)
    history = _pandas(before.join(labels.select("event_id"), "event_id", "left_semi")
                      .select("user_id", "item_id", (F.unix_micros("event_ts") / 1e6).alias("ts_s")).toPandas())
    train_users = pd.Index(sorted(history["user_id"].unique()))
    history = history.assign(user_idx=train_users.get_indexer(history["user_id"]),
                             item_idx=ids.get_indexer(history["item_id"]))
    return Holdout(cutoff=cutoff, items=items, users=query,
                   truth=[truth_by_user.get(u, set()) for u in users],
                   purchased=[list(bought_by_user.get(u, [])) for u in users],
                   history=history[history["item_idx"] >= 0], train_users=train_users,
                   seen=[list(seen_by_user.get(u, [])) for u in users])


def _indices_by_user(events: DataFrame, ids: pd.Index) -> pd.Series:
    """Catalogue indices of the distinct items of ``events``, per user."""
    pairs = _pandas(events.select("user_id", "item_id").distinct().toPandas())
    pairs = pairs.assign(i=ids.get_indexer(pairs["item_id"]))
    return pairs[pairs["i"] >= 0].groupby("user_id")["i"].apply(list)


def _pandas(df: object) -> pd.DataFrame:
    """Spark's ``toPandas`` result, typed."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"toPandas returned {type(df).__name__}, not a DataFrame")
    return df


def recent_indices(holdout: Holdout) -> list[np.ndarray]:
    """Catalogue positions of each holdout user's recent items (unknown items dropped)."""
    ids = holdout.item_ids
    out = []
    for items in holdout.users.column("u_recent_items").to_pylist():
        pos = ids.get_indexer(items or [])
        out.append(pos[pos >= 0])
    return out
