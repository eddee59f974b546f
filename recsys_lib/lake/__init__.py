"""The lake: one module for Delta I/O.

``open_lake(spark, cfg)`` picks the engine: native delta-spark when its jar is
on the classpath (or when ``lake.engine: native``), else delta-rs.
"""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession

from recsys_lib.core.config import RecsysConfig
from recsys_lib.lake.base import (
    CommitResult,
    Lake,
    LakeConflictError,
    LakeError,
    RetryPolicy,
    TableNotFound,
    TableSpec,
)
from recsys_lib.lake.deltars import DeltaRsLake

__all__ = [
    "CommitResult", "DeltaRsLake", "Lake", "LakeConflictError", "LakeError", "RetryPolicy",
    "TableNotFound", "TableSpec", "delta_jar_available", "driver_lake", "open_lake",
]


def delta_jar_available(spark: SparkSession) -> bool:
    """True when the Delta Lake JVM classes are loadable and the SQL extension is on."""
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    if "DeltaSparkSessionExtension" not in extensions:
        return False
    try:
        jvm: Any = getattr(spark.sparkContext, "_jvm")  # noqa: B009 - private, may be absent
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        loader.loadClass("io.delta.tables.DeltaTable")
        return True
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False


def open_lake(spark: SparkSession, cfg: RecsysConfig, engine: str | None = None) -> Lake:
    """The lake for this config.

    Raises:
        LakeError: If the native engine is asked for but the Delta jar is missing.

    """
    choice = engine or cfg.lake.engine
    retry = RetryPolicy(cfg.lake.commit_retries, cfg.lake.retry_backoff, cfg.lake.retry_backoff_max)
    if choice == "native" or (choice == "auto" and delta_jar_available(spark)):
        if not delta_jar_available(spark):
            raise LakeError(
                "lake.engine is 'native' but the Delta Lake jar is not on Spark's classpath "
                "(set spark.jars to a local delta-spark jar and spark.sql.extensions); "
                "use lake.engine=delta-rs instead"
            )
        from recsys_lib.lake.native import NativeDeltaLake

        return NativeDeltaLake(spark, cfg.lake_root, retry=retry, storage_options=cfg.lake.storage_options)
    return DeltaRsLake(spark, cfg.lake_root, retry=retry, storage_options=cfg.lake.storage_options)


def driver_lake(cfg: RecsysConfig) -> Lake:
    """A delta-rs lake without Spark, for driver-side Arrow reads and commits (the online sync, serving).

    Its Spark-returning methods (``read``, ``changes``, ``append`` of a DataFrame) must not be called.
    """
    retry = RetryPolicy(cfg.lake.commit_retries, cfg.lake.retry_backoff, cfg.lake.retry_backoff_max)
    no_spark: Any = None
    return DeltaRsLake(no_spark, cfg.lake_root, retry=retry, storage_options=cfg.lake.storage_options)
