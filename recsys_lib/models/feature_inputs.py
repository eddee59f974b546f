"""Model inputs from the feature tables, so serving reads what training saw.

Training rows name point-in-time features ``u_<feature>`` and ``i_<feature>``;
the feature tables (finalised by :func:`recsys_lib.features.load_features` at
the serving time) name the same definitions ``<feature>``. These helpers select
and rename, failing loudly if a column the model needs is missing.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_lib.models.two_tower import ModelSpec


def user_inputs(users: DataFrame, spec: ModelSpec) -> DataFrame:
    """``user_id``, ``u_*``, ``u_recent_items`` and ``u_top_categories`` from finalised ``user_features`` rows.

    Raises:
        ValueError: If the table lacks a column the model was trained on.

    """
    _require(users, [c[2:] for c in spec.query_numeric] + ["recent_item_ids", "top_categories"], "user_features")
    return users.select("user_id", *[F.col(c[2:]).alias(c) for c in spec.query_numeric],
                        F.col("recent_item_ids").alias("u_recent_items"),
                        F.col("top_categories").alias("u_top_categories"))


def item_inputs(items: DataFrame, spec: ModelSpec) -> DataFrame:
    """``item_id``, ``category_id``, ``price`` and ``i_*`` from finalised ``item_features`` rows."""
    _require(items, [c[2:] for c in spec.item_numeric] + ["category_id", "price"], "item_features")
    return items.select("item_id", "category_id", "price", *[F.col(c[2:]).alias(c) for c in spec.item_numeric])


def _require(df: DataFrame, columns: list[str], table: str) -> None:
    missing = sorted(set(columns) - set(df.columns))
    if missing:
        raise ValueError(f"{table} lacks model input column(s) {missing}: the model and feature config disagree")
