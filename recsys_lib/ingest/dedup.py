"""Label each classified record: new, quarantined, or which kind of duplicate.

Valid records are keyed by ``event_id``; bad ones by a hash of (source file, raw
line), so re-ingesting a folder neither duplicates events nor re-quarantines
lines. Within a run the record kept for a key is the first by (source file, 64-bit
hash of the raw text), which makes the choice independent of partitioning. Valid
records leave their raw text behind here: only quarantined lines store it.
"""

from __future__ import annotations

from enum import Enum

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F


class Status(str, Enum):
    """Where a record ends up (the ``status`` column)."""

    NEW = "new"
    QUARANTINED = "quarantined"
    DUPLICATE_IN_BATCH = "duplicate_in_batch"
    DUPLICATE_EXISTING = "duplicate_existing"
    ALREADY_QUARANTINED = "already_quarantined"


DUPLICATE_STATUSES = (Status.DUPLICATE_IN_BATCH, Status.DUPLICATE_EXISTING, Status.ALREADY_QUARANTINED)


def quarantine_key(source_file: str = "source_file", raw: str = "value") -> F.Column:
    """Stable key of a quarantined line: SHA-256 of its file and text."""
    return F.sha2(F.concat_ws("\u0001", F.col(source_file), F.coalesce(F.col(raw), F.lit(""))), 256)


#: Up to this many input records, the stored keys are first narrowed to the batch's own keys through a
#: broadcast: a micro-batch then scans the key column once instead of shuffling every stored key.
BROADCAST_BATCH_KEYS = 200_000


def label(classified: DataFrame, existing_event_ids: DataFrame, existing_quarantine_keys: DataFrame,
          *, input_records: int | None = None) -> DataFrame:
    """Add ``record_key`` and ``status`` to classified records.

    Args:
        classified: Output of :func:`recsys_lib.ingest.validate.classify`.
        existing_event_ids: Column ``event_id`` of events already stored.
        existing_quarantine_keys: Column ``record_key`` of lines already quarantined.
        input_records: How many records ``classified`` holds, when known; small batches are
            looked up through a broadcast of their keys (see :data:`BROADCAST_BATCH_KEYS`).

    """
    valid = F.col("reason").isNull()
    keyed = classified.withColumn(
        "record_key", F.when(valid, F.col("event_id")).otherwise(quarantine_key())
    ).withColumn("_key", F.concat(F.when(valid, F.lit("e:")).otherwise(F.lit("q:")), F.col("record_key")))
    existing = (
        existing_event_ids.select(F.concat(F.lit("e:"), "event_id").alias("_key"))
        .unionByName(existing_quarantine_keys.select(F.concat(F.lit("q:"), "record_key").alias("_key")))
    )
    if input_records is not None and input_records <= BROADCAST_BATCH_KEYS:
        existing = existing.join(F.broadcast(keyed.select("_key").distinct()), "_key", "left_semi")
    existing = existing.distinct().withColumn("_exists", F.lit(True))
    # A valid row's raw text is not stored, so it leaves here and only a hash of it
    # travels through the shuffle (it orders conflicting copies of one event id).
    slim = keyed.withColumn("_text_hash", F.xxhash64("value")).withColumn(
        "value", F.when(~valid, F.col("value"))
    )
    order = Window.partitionBy("_key").orderBy("source_file", "_text_hash")
    ranked = slim.withColumn("_rank", F.row_number().over(order))
    joined = ranked.join(existing, "_key", "left")
    status = (
        F.when(F.col("_rank") > 1, F.lit(Status.DUPLICATE_IN_BATCH.value))
        .when(F.col("_exists") & valid, F.lit(Status.DUPLICATE_EXISTING.value))
        .when(F.col("_exists"), F.lit(Status.ALREADY_QUARANTINED.value))
        .when(valid, F.lit(Status.NEW.value))
        .otherwise(F.lit(Status.QUARANTINED.value))
    )
    return joined.withColumn("status", status).drop("_key", "_rank", "_exists", "_text_hash")
