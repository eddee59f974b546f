"""What every Spark job starts from: config, a SparkSession and the lake."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from recsys_lib.core.config import RecsysConfig
from recsys_lib.core.progress import SparkProgress
from recsys_lib.core.spark import build_spark
from recsys_lib.lake import Lake, open_lake


@dataclass
class JobContext:
    """A running job's config, session and lake."""

    cfg: RecsysConfig
    spark: SparkSession
    lake: Lake
    progress: SparkProgress | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop the progress reports and the SparkSession."""
        if self.progress is not None:
            self.progress.stop()
        self.spark.stop()


def start(cfg: RecsysConfig, *, streaming: bool = False, progress: bool = False) -> JobContext:
    """Build the SparkSession and open the lake for ``cfg`` (``streaming``: for the stream job).

    ``progress`` reports running Spark stages on stderr every 10 s (the CLI's batch commands, unless ``-q``).
    """
    spark = build_spark(cfg.spark, streaming=streaming)
    watcher = SparkProgress(spark).start() if progress and not streaming else None
    return JobContext(cfg=cfg, spark=spark, lake=open_lake(spark, cfg), progress=watcher)
