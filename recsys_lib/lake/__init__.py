"""The lake: one module for Delta I/O.

Spark computes and delta-rs commits (:class:`DeltaRsLake`). A native delta-spark
engine was dropped: its jar cannot be fetched here, so its code never ran in a test.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession

from recsys_lib.core.config import RecsysConfig
from recsys_lib.lake.base import (
    CommitResult,
    Lake,
    RetryPolicy,
    TableSpec,
)
from recsys_lib.lake.deltars import DeltaRsLake
from recsys_lib.lake.errors import CorruptLog, LakeConflictError, LakeError, SchemaDrift, TableNotFound
from recsys_lib.lake.lease import LeaseHeld, LeaseLost

__all__ = [
    "CommitResult", "CorruptLog", "DeltaRsLake", "Lake", "LakeConflictError", "LakeError", "LeaseHeld", "LeaseLost",
    "RetryPolicy",
    "SchemaDrift", "TableNotFound", "TableSpec", "driver_lake", "open_lake", "published_lake",
]


def open_lake(spark: SparkSession, cfg: RecsysConfig, engine: str | None = None) -> Lake:
    """The lake for this config.

    Raises:
        LakeError: For an engine other than ``delta-rs`` (or ``auto``).

    """
    choice = engine or cfg.lake.engine
    if choice not in ("auto", "delta-rs"):
        raise LakeError(f"lake.engine {choice!r} is not available: the only engine is 'delta-rs'")
    retry = RetryPolicy(cfg.lake.commit_retries, cfg.lake.retry_backoff, cfg.lake.retry_backoff_max)
    return DeltaRsLake(spark, cfg.lake_root, retry=retry, storage_options=cfg.lake.storage_options,
                       lease_ttl=cfg.lake.lease_ttl, lease_wait=cfg.lake.lease_wait)


def driver_lake(cfg: RecsysConfig) -> Lake:
    """A delta-rs lake without Spark, for driver-side Arrow reads and commits (the online sync, serving).

    Its Spark-returning methods (``read``, ``changes``, ``append`` of a DataFrame) must not be called.
    """
    retry = RetryPolicy(cfg.lake.commit_retries, cfg.lake.retry_backoff, cfg.lake.retry_backoff_max)
    no_spark: Any = None
    return DeltaRsLake(no_spark, cfg.lake_root, retry=retry, storage_options=cfg.lake.storage_options,
                       lease_ttl=cfg.lake.lease_ttl, lease_wait=cfg.lake.lease_wait)


def published_lake(spark: SparkSession | None, cfg: RecsysConfig) -> Lake:
    """The lake of the published feature tables (``lake.published_root``; see :mod:`recsys_lib.features.publish`).

    ``spark`` None gives a driver-only lake, as :func:`driver_lake` does.
    """
    retry = RetryPolicy(cfg.lake.commit_retries, cfg.lake.retry_backoff, cfg.lake.retry_backoff_max)
    session: Any = spark
    return DeltaRsLake(session, cfg.published_root, retry=retry, storage_options=cfg.lake.storage_options,
                       lease_ttl=cfg.lake.lease_ttl, lease_wait=cfg.lake.lease_wait)
