"""What every Spark job starts from: config, a SparkSession and the lake."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession

from recsys_lib.core.config import RecsysConfig
from recsys_lib.core.spark import build_spark
from recsys_lib.lake import Lake, open_lake


@dataclass
class JobContext:
    """A running job's config, session and lake."""

    cfg: RecsysConfig
    spark: SparkSession
    lake: Lake

    def stop(self) -> None:
        """Stop the SparkSession."""
        self.spark.stop()


def start(cfg: RecsysConfig, *, streaming: bool = False) -> JobContext:
    """Build the SparkSession and open the lake for ``cfg`` (``streaming``: for the stream job)."""
    spark = build_spark(cfg.spark, streaming=streaming)
    return JobContext(cfg=cfg, spark=spark, lake=open_lake(spark, cfg))
