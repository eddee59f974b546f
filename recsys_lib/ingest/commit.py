"""Validate, deduplicate and commit raw lines to ``events`` and ``events_quarantine``.

The core that batch ingestion (:mod:`recsys_lib.pipelines.ingest`) and each streaming
micro-batch share. Every input line ends up exactly once as a new event, a
quarantined line, or a counted duplicate. The counts are reconciled against an
independent count of the input lines before anything is committed, and the rows
committed are checked against the counts afterwards.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys_lib.core.config import RecsysConfig
from recsys_lib.core.faults import fault_point
from recsys_lib.core.privacy import Pseudonyms, mask_raw_arrow, mask_raw_column, pseudonyms_for
from recsys_lib.core.schema import (
    EVENTS_PARTITION_BY,
    EVENTS_SCHEMA,
    EVENTS_TABLE,
    QUARANTINE_PARTITION_BY,
    QUARANTINE_SCHEMA,
    QUARANTINE_TABLE,
)
from recsys_lib.ingest.dedup import DUPLICATE_STATUSES, Status, label
from recsys_lib.ingest.local_dedup import StoredKeys, label_local
from recsys_lib.ingest.local_validate import classify_local, event_date
from recsys_lib.ingest.tombstones import tombstones
from recsys_lib.ingest.validate import classify
from recsys_lib.lake import CommitResult, Lake, LakeConflictError, TableSpec
from recsys_lib.lake.base import StillValid
from recsys_lib.lake.files import spark_to_arrow

EVENTS_SPEC = TableSpec(EVENTS_TABLE, EVENTS_SCHEMA, EVENTS_PARTITION_BY)
QUARANTINE_SPEC = TableSpec(QUARANTINE_TABLE, QUARANTINE_SCHEMA, QUARANTINE_PARTITION_BY)


log = logging.getLogger(__name__)


class IngestError(RuntimeError):
    """Ingestion could not run, or its counts did not reconcile."""


@dataclass
class IngestSummary:
    """What one ingest run did. ``input_records == valid + quarantined + duplicates + forgotten``."""

    run_id: str
    input_dir: str
    input_records: int
    valid: int
    quarantined: int
    duplicates: int
    duplicates_by_kind: dict[str, int] = field(default_factory=dict)
    quarantined_by_reason: dict[str, int] = field(default_factory=dict)
    #: Lines of forgotten people (``forget_tombstones``): dropped, neither stored nor quarantined.
    forgotten: int = 0
    events_version: int = -1
    quarantine_version: int = -1
    #: Raw files quarantined whole (``quarantined_files``): unreadable, so none of their lines is counted above.
    quarantined_files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        """True when every input record is accounted for exactly once."""
        return self.input_records == self.valid + self.quarantined + self.duplicates + self.forgotten

    def to_json(self) -> dict[str, Any]:
        """The summary as written by ``--summary-json``."""
        out = asdict(self)
        out["balanced"] = self.balanced
        out["events_per_second"] = round(self.input_records / self.seconds, 1) if self.seconds else None
        return out


def ingest_frame(spark: SparkSession, lake: Lake, cfg: RecsysConfig, raw: DataFrame, *, run_id: str, source: str,
                 now: datetime, app_id: str | None = None, batch_id: int | None = None) -> IngestSummary:
    """Validate, deduplicate and commit raw lines (columns ``value``, ``source_file``).

    The core of both batch ingestion and a streaming micro-batch. With ``privacy.pseudonymize``
    on, stored events carry the user id's pseudonym and quarantined lines their raw text with
    the user id masked (:mod:`recsys_lib.core.privacy`). With ``app_id``
    and ``batch_id`` each table's append is an app transaction, so a replayed batch
    commits nothing twice (a replay finds its events already stored and counts them
    as duplicates).

    Raises:
        IngestError: If the counts do not reconcile (then nothing is committed).

    """
    started = time.monotonic()
    ids = pseudonyms_for(cfg)  # first: a missing or short key fails before any work
    lake.create(EVENTS_SPEC)
    lake.create(QUARANTINE_SPEC)
    stages = _Stopwatch()
    input_records = raw.count()
    stages.lap("count_input")
    classified = classify(raw, max_line_bytes=cfg.ingest.max_line_bytes,
                          max_future_skew_s=cfg.ingest.max_future_skew, now=now,
                          allowed_lateness_s=cfg.ingest.allowed_lateness)
    graves, forgotten = tombstones(lake, cfg), 0
    if graves is not None:  # lines of forgotten people leave here, counted
        gone = graves.column(F.col("user_id"))
        forgotten = classified.where(gone).count()
        classified = classified.where(~gone)
    classified = classified.persist(StorageLevel.MEMORY_AND_DISK)
    batch = batch_id if app_id else None
    try:
        for attempt in _attempts(cfg):
            read = lake.version(EVENTS_TABLE)
            labelled = label(classified, lake.read(EVENTS_TABLE, version=read).select("event_id"),
                             lake.read(QUARANTINE_TABLE).select("record_key"), input_records=input_records)
            labelled = labelled.persist(StorageLevel.MEMORY_AND_DISK)
            try:
                summary = _reconciled(run_id, source, input_records, _count(labelled), forgotten)
                stages.lap("parse_validate_dedupe")
                ingested_at = F.lit(now).cast("timestamp")
                meta = {"run_id": run_id, "input": source}
                events = _events_rows(labelled, run_id, ingested_at, ids)
                try:
                    ev = lake.append(EVENTS_SPEC, events, metadata=meta, app_id=txn_app(app_id, EVENTS_TABLE),
                                     batch_id=batch, read_version=read,
                                     still_valid=_untouched_frame(spark, lake, events))
                except LakeConflictError as exc:
                    _conflicted(run_id, attempt, exc)
                    continue
                stages.lap("write_commit_events")
                fault_point("between_ingest_commits")
                if summary.quarantined:
                    quarantine = _quarantine_rows(labelled, run_id, ingested_at, ids)
                    qv = lake.append(QUARANTINE_SPEC, quarantine, metadata=meta,
                                     app_id=txn_app(app_id, QUARANTINE_TABLE), batch_id=batch)
                else:
                    qv = _nothing_quarantined(lake)
                stages.lap("write_commit_quarantine")
                fault_point("after_ingest_commits")
                return _committed(summary, ev, qv, started, stages)
            finally:
                labelled.unpersist()
    finally:
        classified.unpersist()
    raise _gave_up(run_id, cfg)


def ingest_arrow(spark: SparkSession, lake: Lake, cfg: RecsysConfig, raw: pa.Table, stored: StoredKeys, *,
                 run_id: str, source: str, now: datetime, app_id: str | None = None,
                 batch_id: int | None = None) -> IngestSummary:
    """:func:`ingest_frame` for a small batch of lines already on the driver (an Arrow table).

    Validated by :func:`~recsys_lib.ingest.local_validate.classify_local` (lines it is not
    sure of go to Spark's ``classify``), deduplicated against ``stored``, and committed
    from the driver. Same results, same app transactions, same checks.
    """
    started = time.monotonic()
    ids = pseudonyms_for(cfg)
    lake.create(EVENTS_SPEC)
    lake.create(QUARANTINE_SPEC)
    stages = _Stopwatch()
    stages.lap("count_input")
    ic = cfg.ingest

    def spark_classify(lines: pa.Table) -> pa.Table:
        return classify(spark.createDataFrame(lines), max_line_bytes=ic.max_line_bytes,
                        max_future_skew_s=ic.max_future_skew, now=now, allowed_lateness_s=ic.allowed_lateness).toArrow()

    classified, _ = classify_local(raw, max_line_bytes=ic.max_line_bytes, max_future_skew_s=ic.max_future_skew,
                                   now=now, allowed_lateness_s=ic.allowed_lateness, fallback=spark_classify)
    graves, forgotten = tombstones(lake, cfg), 0
    if graves is not None:
        gone = graves.arrow(classified.column("user_id"))
        forgotten = int(pc.sum(gone).as_py() or 0)
        classified = classified.filter(pc.invert(gone))
    meta = {"run_id": run_id, "input": source}
    batch = batch_id if app_id else None
    for attempt in _attempts(cfg):
        read = lake.version(EVENTS_TABLE)  # the stored keys below are read at this version or a later one
        labelled = label_local(classified, stored)
        groups = labelled.group_by(["status", "reason", "reason_field"]).aggregate([("status", "count")]).to_pylist()
        counts: Counter[tuple[str, str | None]] = Counter()
        for g in groups:
            counts[(g["status"], f"{g['reason']}:{g['reason_field']}" if g["reason_field"] else g["reason"])] += \
                g["status_count"]
        summary = _reconciled(run_id, source, raw.num_rows, counts, forgotten)
        stages.lap("parse_validate_dedupe")
        events = _with_status(labelled, Status.NEW)
        if ids is not None:
            events = events.set_column(events.schema.get_field_index("user_id"), "user_id",
                                       ids.arrow(events.column("user_id")))
        events = _stamped(events.append_column("event_date", pc.cast(events.column("event_ts"), pa.date32())),
                          run_id, now)
        try:
            ev = lake.append_arrow(EVENTS_SPEC, events.select(EVENTS_SCHEMA.fieldNames()).cast(
                spark_to_arrow(EVENTS_SCHEMA)), metadata=meta, app_id=txn_app(app_id, EVENTS_TABLE), batch_id=batch,
                read_version=read, still_valid=_untouched_arrow(lake, events.column("event_id")))
        except LakeConflictError as exc:
            _conflicted(run_id, attempt, exc)
            continue
        break
    else:
        raise _gave_up(run_id, cfg)
    stages.lap("write_commit_events")
    fault_point("between_ingest_commits")
    lines = _with_status(labelled, Status.QUARANTINED)
    if lines.num_rows:
        raw = lines.column("value") if ids is None else mask_raw_arrow(lines.column("value"))
        lines = _stamped(lines.append_column("raw", raw), run_id, now)
        lines = lines.append_column("ingest_date", pa.array([event_date(now)] * lines.num_rows, pa.date32()))
        qv = lake.append_arrow(QUARANTINE_SPEC, lines.select(QUARANTINE_SCHEMA.fieldNames()).cast(
            spark_to_arrow(QUARANTINE_SCHEMA)), metadata=meta, app_id=txn_app(app_id, QUARANTINE_TABLE),
            batch_id=batch)
    else:
        qv = _nothing_quarantined(lake)
    stages.lap("write_commit_quarantine")
    fault_point("after_ingest_commits")
    return _committed(summary, ev, qv, started, stages)


def _with_status(labelled: pa.Table, status: Status) -> pa.Table:
    return labelled.filter(pc.equal(labelled.column("status"), status.value))


def _stamped(rows: pa.Table, run_id: str, now: datetime) -> pa.Table:
    """``rows`` with the ingest run id and time added."""
    return rows.append_column("ingest_run_id", pa.array([run_id] * rows.num_rows, pa.string())).append_column(
        "ingested_at", pa.array([now] * rows.num_rows, pa.timestamp("us", tz="UTC")))


def _reconciled(run_id: str, source: str, input_records: int,
                counts: Mapping[tuple[str, str | None], int], forgotten: int = 0) -> IngestSummary:
    """The summary of the counts; raises before anything is committed if they do not balance."""
    summary = _summarise(run_id, source, input_records, counts)
    summary.forgotten = forgotten
    if not summary.balanced:
        raise IngestError(
            f"ingest {run_id}: counts do not reconcile: {input_records} input records but "
            f"{summary.valid} valid + {summary.quarantined} quarantined + {summary.duplicates} "
            f"duplicates + {forgotten} forgotten; nothing was committed"
        )
    return summary


def _nothing_quarantined(lake: Lake) -> CommitResult:
    """The quarantine "commit" of a run with nothing to quarantine: none at all.

    No empty app transaction is needed for exactly-once: a replay of the batch has nothing to
    quarantine either. (Saves a Delta commit in most micro-batches: event -> served is faster.)
    """
    return CommitResult(version=lake.version(QUARANTINE_TABLE), skipped=True)


def _committed(summary: IngestSummary, ev: CommitResult, qv: CommitResult, started: float,
               stages: _Stopwatch) -> IngestSummary:
    """The summary completed with the two commits, after checking they hold the rows counted."""
    if (not ev.skipped and ev.rows != summary.valid) or (not qv.skipped and qv.rows != summary.quarantined):
        raise IngestError(
            f"ingest {summary.run_id}: committed {ev.rows} events and {qv.rows} quarantined lines, "
            f"but counted {summary.valid} and {summary.quarantined}"
        )
    summary.events_version = ev.version
    summary.quarantine_version = qv.version
    summary.seconds = round(time.monotonic() - started, 3)
    summary.stage_seconds = stages.laps
    return summary


#: A conflicting writer's appends up to this many rows are checked for overlap on the driver; more: recompute.
_OVERLAP_CHECK_ROWS = 1_000_000


def _added_ids(lake: Lake, read: int, now: int) -> pa.Table | None:
    """The ``event_id`` of events appended by versions ``read + 1``..``now`` (None: too many, or not appends only).

    With :meth:`Lake.append`'s ``still_valid``: an ingest whose new events share no id with these was
    deduplicated correctly, so its files are committed on top, not computed again (a long batch ingest
    then wins against a stream committing every second).
    """
    added = lake.inserted_arrow(EVENTS_TABLE, read + 1, now, max_rows=_OVERLAP_CHECK_ROWS, columns=["event_id"])
    return None if added is None else pa.table(added)


def _untouched_frame(spark: SparkSession, lake: Lake, events: DataFrame) -> StillValid:
    """Whether no event appended since the read shares an id with ``events`` (Spark's new rows)."""
    def check(read: int, now: int) -> bool:
        added = _added_ids(lake, read, now)
        return added is not None and (added.num_rows == 0 or events.join(
            F.broadcast(spark.createDataFrame(added)), "event_id", "left_semi").isEmpty())
    return check


def _untouched_arrow(lake: Lake, ids: pa.ChunkedArray) -> StillValid:
    """Whether no event appended since the read has one of ``ids`` (the driver's new rows)."""
    def check(read: int, now: int) -> bool:
        added = _added_ids(lake, read, now)
        return added is not None and not pc.any(pc.is_in(added.column("event_id"),
                                                          value_set=ids.combine_chunks())).as_py()
    return check


def _attempts(cfg: RecsysConfig) -> range:
    """Attempt numbers for deduplicating and committing (one more than ``lake.commit_retries``)."""
    return range(cfg.lake.commit_retries + 1)


def _conflicted(run_id: str, attempt: int, exc: LakeConflictError) -> None:
    log.warning("ingest %s: another writer appended to events since this run deduplicated (attempt %d); "
                "deduplicating again against the new version: %s", run_id, attempt + 1, exc)


def _gave_up(run_id: str, cfg: RecsysConfig) -> LakeConflictError:
    return LakeConflictError(f"ingest {run_id}: events kept changing under it; gave up after "
                             f"{cfg.lake.commit_retries + 1} attempts (nothing of this run was committed to events)")


def txn_app(app_id: str | None, table: str) -> str | None:
    """The app-transaction id one application uses for one table."""
    return f"{app_id}:{table}" if app_id else None


class _Stopwatch:
    """Named laps, for the summary's per-stage timings."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = round(now - self._last, 3)
        self._last = now


def _count(labelled: DataFrame) -> dict[tuple[str, str | None], int]:
    reason = F.when(F.col("reason_field").isNotNull(),
                    F.concat_ws(":", "reason", "reason_field")).otherwise(F.col("reason"))
    rows = labelled.groupBy("status", reason.alias("why")).count().collect()
    return {(r["status"], r["why"]): int(r["count"]) for r in rows}


def _summarise(run_id: str, source: str, input_records: int,
               counts: Mapping[tuple[str, str | None], int]) -> IngestSummary:
    by_status: dict[str, int] = {}
    by_reason: dict[str, int] = {}
    for (status, why), n in counts.items():
        by_status[status] = by_status.get(status, 0) + n
        if status == Status.QUARANTINED.value and why:
            by_reason[why] = by_reason.get(why, 0) + n
    dups = {s.value: by_status.get(s.value, 0) for s in DUPLICATE_STATUSES}
    return IngestSummary(
        run_id=run_id, input_dir=source, input_records=input_records,
        valid=by_status.get(Status.NEW.value, 0), quarantined=by_status.get(Status.QUARANTINED.value, 0),
        duplicates=sum(dups.values()), duplicates_by_kind=dups,
        quarantined_by_reason=dict(sorted(by_reason.items())),
    )


def _events_rows(labelled: DataFrame, run_id: str, ingested_at: F.Column, ids: Pseudonyms | None) -> DataFrame:
    new = labelled.where(F.col("status") == Status.NEW.value)
    if ids is not None:
        new = new.withColumn("user_id", ids.column(F.col("user_id")))
    return (
        new
        .withColumn("ingest_run_id", F.lit(run_id))
        .withColumn("ingested_at", ingested_at)
        .withColumn("event_date", F.to_date("event_ts"))
        .select(*EVENTS_SCHEMA.fieldNames())
    )


def _quarantine_rows(labelled: DataFrame, run_id: str, ingested_at: F.Column,
                     ids: Pseudonyms | None) -> DataFrame:
    lines = labelled.where(F.col("status") == Status.QUARANTINED.value)
    return (
        lines.withColumn("raw", F.col("value") if ids is None else mask_raw_column(F.col("value")))
        .withColumn("ingest_run_id", F.lit(run_id))
        .withColumn("ingested_at", ingested_at)
        .withColumn("ingest_date", F.to_date(ingested_at))
        .select(*QUARANTINE_SCHEMA.fieldNames())
    )
