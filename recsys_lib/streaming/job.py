"""The Structured Streaming job: raw landing folder -> micro-batches -> events and features.

The file source lists the landing folder (hidden and ``_``-prefixed files are
skipped, so producers write then rename). Spark's checkpoint gives each
micro-batch a stable id across restarts; :func:`process_batch` makes every write
of a batch exactly-once with Delta app transactions keyed by (query, batch id).
``available_now`` processes the backlog and stops (backfills, tests, hourly DAGs).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys_lib.core.config import RecsysConfig
from recsys_lib.core.faults import fault_point
from recsys_lib.features import entities
from recsys_lib.features.online import Projector
from recsys_lib.ingest.corrupt import INGEST_TABLES
from recsys_lib.ingest.local_dedup import StoredKeys
from recsys_lib.ingest.validate import RAW_FILE_GLOB
from recsys_lib.lake import Lake
from recsys_lib.lake.files import filesystem_for
from recsys_lib.online import open_store
from recsys_lib.streaming.health import STATUS_FILE, write_pid
from recsys_lib.streaming.microbatch import process_batch

log = logging.getLogger(__name__)


def source_stream(spark: SparkSession, cfg: RecsysConfig, input_dir: str) -> DataFrame:
    """The raw lines as a stream: columns ``value`` and ``source_file``.

    Raises:
        ValueError: For the Kafka source, which this build cannot run (no Kafka jar, no broker).

    """
    if cfg.streaming.source == "kafka":
        raise ValueError("streaming.source=kafka needs the spark-sql-kafka jar and a broker; neither is "
                         "available in this environment, so only the file source is implemented and tested")
    return (
        spark.readStream.format("text")
        .option("recursiveFileLookup", "true")
        .option("pathGlobFilter", RAW_FILE_GLOB)
        .option("maxFilesPerTrigger", cfg.streaming.max_files_per_trigger)
        .load(input_dir)
        .select("value", F.col("_metadata.file_path").alias("source_file"))
    )


def run_stream(spark: SparkSession, lake: Lake, cfg: RecsysConfig, input_dir: str | None = None, *,
               available_now: bool = False, trigger_seconds: float | None = None) -> list[dict[str, Any]]:
    """Run the streaming query until stopped (or, with ``available_now``, until the backlog is done)."""
    source = input_dir or cfg.landing_dir
    if "://" not in source:
        Path(source).mkdir(parents=True, exist_ok=True)
    checkpoint = cfg.checkpoint_dir
    status_path = Path(checkpoint) / STATUS_FILE if "://" not in checkpoint else None
    reports: list[dict[str, Any]] = []
    stored = StoredKeys(lake)  # the stored event ids, kept between micro-batches
    stored.warm_up()  # loaded while the query starts
    projector = _projector(lake, cfg)
    ids: list[str] = []  # the checkpoint's id, read at the first batch (Spark has written it by then)
    # Each batch holds the leases of every table it writes: a batch ingest or a refresh in
    # progress makes the stream wait (up to lake.lease_wait), and their commits wait for the batch.
    tables = [*INGEST_TABLES, *(e.table for e in entities(cfg.features).values())]
    owner = f"stream {cfg.streaming.query_name} (checkpoint {checkpoint})"

    def on_batch(batch: DataFrame, batch_id: int) -> None:
        if not ids:
            ids.append(checkpoint_id(checkpoint))
        with lake.writing(tables, owner):
            report = process_batch(spark, lake, cfg, batch, query=cfg.streaming.query_name, batch_id=batch_id,
                                   stored=stored, checkpoint=checkpoint, projector=projector, stream_id=ids[0])
        record = report.to_json()
        if projector is not None:
            record["online"] = {"failures": projector.failures, "catch_ups": projector.catch_ups,
                                "last_error": projector.last_error}
        reports.append(record)
        log.info("batch %d: %d in, %d new, %d quarantined, %d duplicates, merge %.2fs", batch_id,
                    report.rows_in, report.new_events, report.quarantined, report.duplicates, report.merge_seconds)
        if status_path is not None:
            status_path.parent.mkdir(parents=True, exist_ok=True)
            with status_path.open("a") as fh:
                fh.write(json.dumps(record, default=str) + "\n")
        fault_point("before_checkpoint_commit")  # every Delta commit done, Spark's commit log not yet

    writer = (source_stream(spark, cfg, source).writeStream.foreachBatch(on_batch)
              .option("checkpointLocation", checkpoint).queryName(cfg.streaming.query_name))
    if available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{trigger_seconds or cfg.streaming.trigger} seconds")
    # One stream per checkpoint: a second one on the same checkpoint would replay batches the
    # first is writing and race it on Spark's offset log. It exits at once, naming the first.
    with lake.writing([checkpoint_lease(checkpoint)], owner, wait=0):
        if not available_now:
            write_pid(cfg)  # the watchdog's liveness check (recsys_lib.streaming.health)
        query = writer.start()
        query.awaitTermination()
    return reports


def checkpoint_lease(checkpoint: str) -> str:
    """The lease name that stands for one stream checkpoint (a short digest of its location)."""
    return "checkpoint-" + hashlib.sha256(checkpoint.rstrip("/").encode("utf-8")).hexdigest()[:16]


def checkpoint_id(checkpoint: str) -> str:
    """The query id Spark keeps in ``<checkpoint>/metadata``: fixed for a checkpoint, new for a new one.

    Raises:
        StreamError: If the metadata file is missing or holds no id (Spark writes it before the first batch).

    """
    path = f"{checkpoint.rstrip('/')}/metadata"
    fs, inner = filesystem_for(path)
    try:
        with fs.open_input_stream(inner) as stream:
            found = json.loads(stream.read().decode("utf-8").splitlines()[0]).get("id")
    except (OSError, ValueError, IndexError) as exc:
        raise StreamError(f"cannot read the stream's id from {path}: {exc}") from exc
    if not isinstance(found, str) or not found:
        raise StreamError(f"{path} holds no query id")
    return found


class StreamError(RuntimeError):
    """The stream cannot run safely; the message says why."""


def _projector(lake: Lake, cfg: RecsysConfig) -> Projector | None:
    """The online store's projector, caught up with Delta first (None when ``online.enabled`` is off).

    The catch-up replays what a kill between a Delta commit and the store's write left out.
    """
    if not cfg.online.enabled:
        return None
    projector = Projector(open_store(cfg), lake, cfg)
    for table in (e.table for e in entities(cfg.features).values()):
        projector.table_committed(table)
    projector.events_committed()
    return projector


def last_batches(cfg: RecsysConfig, limit: int = 10) -> list[dict[str, Any]]:
    """The last batch reports the stream recorded (newest last)."""
    path = Path(cfg.checkpoint_dir) / STATUS_FILE
    if not path.exists():
        return []
    batches = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            batches.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill mid-write: skip it, say so
            if line.strip():
                log.warning("%s line %d is not complete JSON (the stream was stopped while writing it); "
                            "skipped", path, number)
    return batches[-limit:]
