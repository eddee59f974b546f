"""Features: one set of mergeable definitions for full refresh and streaming.

``load_features(spark, entity, as_of=None)`` is the read API for notebooks and jobs.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame, SparkSession

from recsys_lib.core.config import RecsysConfig, load_config
from recsys_lib.features.definitions import ITEM, USER, USER_CATEGORY, Entity, entities
from recsys_lib.features.fold import fold, merge
from recsys_lib.features.read import finalise

__all__ = ["ITEM", "USER", "USER_CATEGORY", "Entity", "entities", "finalise", "fold", "load_features", "merge"]


def load_features(spark: SparkSession, entity: str, as_of: datetime | None = None, *,
                  cfg: RecsysConfig | None = None, version: int | None = None) -> DataFrame:
    """Stored features of ``entity`` (``user``, ``item`` or ``user_category``) with read-time columns at ``as_of``.

    Args:
        spark: The session.
        entity: Which feature table.
        as_of: Time the read-time features are computed for (default: now).
        cfg: Config (default: the embedded default, honouring ``RECSYS_HOME``).
        version: Read this table version instead of the latest.

    """
    from recsys_lib.features.layers import read_states
    from recsys_lib.lake import open_lake

    cfg = cfg or load_config()
    known = entities(cfg.features)
    if entity not in known:
        raise ValueError(f"unknown feature entity {entity!r}: expected one of {sorted(known)}")
    spec = known[entity]
    states = read_states(open_lake(spark, cfg), spec, cfg.features, version=version)
    return finalise(states, spec, cfg.features, as_of)
