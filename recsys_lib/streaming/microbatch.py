"""One streaming micro-batch: ingest exactly once, then bring every feature table up to date.

1. ``events`` and ``events_quarantine`` appends are Delta app transactions
   (``stream-<query>-<checkpoint id>:<table>``, batch id): a replayed batch commits nothing
   twice, and a deleted or replaced checkpoint starts a new id, so its batch ids (from 0
   again) are not mistaken for ones already committed.
2. **Fencing with the full refresh.** Every feature-table commit records the
   ``events`` version it covers (``events_version`` in its commit metadata): the
   refresh the version it read, the stream the version it folded up to. A
   micro-batch reads the covered version C, folds the ``events`` change feed
   for versions (C, E] (E = the events version now), merges that state into
   the stored rows of the affected keys, and commits with ``events_version = E``.
   The merge runs on the table version C was read from, so if a refresh commits
   in between, the merge conflicts and the step is redone from the new C.
   Therefore:

   * a refresh that lands mid-stream is never double counted (its C covers the events);
   * events between a refresh's read and its commit are refolded by the next batch (none are lost);
   * a replayed batch finds C >= E and does nothing;
   * events appended by batch ``recsys ingest`` are folded too.

3. **Only the pending layer is rewritten.** A batch's state is merged into the
   table's pending layer (:mod:`recsys_lib.features.layers`), which holds only the
   keys touched since the last compaction, and swapped in with one
   :meth:`Lake.replace_partitions` commit: the cost follows the batch, not the
   table. When the layer passes ``streaming.pending_max_rows`` it is compacted into
   the base buckets it touches (a second commit; on a conflict it waits for the next
   batch). The three tables are independent, so they are updated concurrently.

New events are read by Spark from the files the ``events`` commits added (the
table is append-only; other commits fall back to the change feed).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys_lib.core.config import RecsysConfig
from recsys_lib.core.faults import fault_point
from recsys_lib.core.schema import EVENTS_SCHEMA, EVENTS_TABLE
from recsys_lib.features import entities, fold
from recsys_lib.features.definitions import BUCKET, Entity
from recsys_lib.features.layers import PENDING, as_pending, compact_pending, overlay, table_spec
from recsys_lib.features.local import LocalEvents, fold_local, overlay_local
from recsys_lib.features.online import Projector, touched_rows
from recsys_lib.features.publish import publish_all
from recsys_lib.features.quality import check_stream_batch
from recsys_lib.ingest.commit import IngestError, ingest_arrow, ingest_frame
from recsys_lib.ingest.corrupt import find_corrupt, quarantine_files
from recsys_lib.ingest.local_dedup import StoredKeys
from recsys_lib.ingest.validate import read_raw_files
from recsys_lib.lake import CommitResult, Lake, LakeConflictError, LakeError
from recsys_lib.lake.files import filesystem_for
from recsys_lib.streaming.batch_files import BatchReadError, checked_batch_files, files_lines, local_path

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    """What one micro-batch did."""

    query: str
    batch_id: int
    rows_in: int
    new_events: int
    quarantined: int
    duplicates: int
    #: Lines of forgotten people, dropped at ingest (``forget_tombstones``).
    forgotten: int = 0
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    merge_seconds: float = 0.0
    seconds: float = 0.0
    #: Seconds of each ingest stage (count, parse/validate/dedupe, the two commits).
    ingest_stage_seconds: dict[str, float] = field(default_factory=dict)
    #: ``local`` (on the driver) or ``spark``.
    ingest_engine: str = "spark"
    #: Seconds spent bringing the batch's lines to the driver, and how: ``files`` (read directly, from
    #: the checkpoint's file list), ``spark`` (one Spark job) or ``none`` (the Spark engine ingests).
    read_seconds: float = 0.0
    read_by: str = "none"
    #: Seconds from the earliest / latest file arrival (mtime) in the batch until its features were committed.
    freshness_lag_max_s: float | None = None
    freshness_lag_min_s: float | None = None
    #: Files of the batch quarantined whole (``quarantined_files``): unreadable, none of their lines counted.
    corrupt_files: list[str] = field(default_factory=list)
    #: Each time a driver-local step failed and Spark did it instead: "<step>: <error>" (logged at WARNING).
    fallbacks: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-able dict."""
        return asdict(self)


def process_batch(spark: SparkSession, lake: Lake, cfg: RecsysConfig, raw: DataFrame, *, query: str,
                  batch_id: int, now: datetime | None = None, stored: StoredKeys | None = None,
                  checkpoint: str | None = None, projector: Projector | None = None,
                  stream_id: str | None = None) -> BatchReport:
    """Apply one micro-batch of raw lines (columns ``value``, ``source_file``).

    ``stream_id`` names the checkpoint the batch ids count in (the stream passes its
    checkpoint's query id): the app transactions are ``stream-<query>-<stream_id>``, so a
    new checkpoint, whose batch ids restart at 0, never finds its batches "already committed".

    A batch of up to ``streaming.local_max_events`` lines is ingested on the driver
    (:func:`~recsys_lib.ingest.commit.ingest_arrow`), deduplicated against ``stored``
    (which a long-running stream keeps between batches; None: read afresh); a larger
    one by Spark (:func:`~recsys_lib.ingest.commit.ingest_frame`). With the query's
    ``checkpoint`` (only the stream itself passes it), the driver reads the batch's
    files itself (:mod:`~recsys_lib.streaming.batch_files`); otherwise, or if that is
    not certain, one Spark job brings ``raw`` to the driver. With a ``projector``, the
    online store follows every commit (:mod:`recsys_lib.features.online`).
    """
    started = time.monotonic()
    now = now or datetime.now(UTC)
    app = f"stream-{query}" if stream_id is None else f"stream-{query}-{stream_id}"
    limit = cfg.streaming.local_max_events
    lines, read_by = None, "none"
    fallbacks: list[str] = []
    corrupt: list[str] = []
    skip: set[str] = set()
    files = None
    if checkpoint is not None:
        try:  # read once: the corrupt-file check and the driver's read both use it
            files = checked_batch_files(checkpoint, batch_id)
        except BatchReadError as exc:  # no check possible; Spark reads the batch (and decides)
            fallbacks.append(_fell_back(f"batch {batch_id}: reading the checkpoint's file list", exc))
    if files:
        raw, skip, corrupt = _without_corrupt_files(spark, lake, raw, files, batch_id, app=app, now=now)
    if limit and files is not None:
        try:
            lines, read_by = files_lines(files, max_lines=limit, skip=skip), "files"
        except BatchReadError as exc:
            fallbacks.append(_fell_back(f"batch {batch_id}: reading the files on the driver", exc))
    if limit and lines is None:
        lines, read_by = raw.limit(limit + 1).toArrow(), "spark"
    read_seconds = round(time.monotonic() - started, 3)
    common: dict[str, Any] = {"run_id": f"{app}-{batch_id}", "source": f"stream:{query}", "now": now,
                              "app_id": app, "batch_id": batch_id}
    summary, engine = None, "spark"
    if lines is not None and lines.num_rows <= limit:
        arrivals = _arrival_times(pc.unique(lines.column("source_file")).to_pylist())
        try:
            summary, engine = ingest_arrow(spark, lake, cfg, lines, stored or StoredKeys(lake), **common), "local"
        except (IngestError, LakeError):
            raise
        except LOCAL_FAILURES as exc:  # data the driver's path cannot take (e.g. a year past 9999): Spark can
            # Safe to redo with Spark: whatever the local path committed carries this batch's app
            # transaction, so it is skipped, and its events are found stored (counted as duplicates).
            fallbacks.append(_fell_back(f"batch {batch_id}: driver-local ingest", exc))
    else:
        arrivals = _arrival_times([r[0] for r in raw.select("source_file").distinct().collect()])
    if summary is None:
        summary = ingest_frame(spark, lake, cfg, raw, **common)
    fault_point("after_ingest_commit")
    if projector is not None and summary.valid:
        projector.events_committed()
    report = BatchReport(query=query, batch_id=batch_id, rows_in=summary.input_records, new_events=summary.valid,
                         quarantined=summary.quarantined, duplicates=summary.duplicates, forgotten=summary.forgotten,
                         ingest_stage_seconds=summary.stage_seconds, ingest_engine=engine,
                         read_seconds=read_seconds, read_by=read_by, corrupt_files=corrupt)
    t0 = time.monotonic()
    report.tables = update_features(spark, lake, cfg, now=now, batch_id=batch_id, projector=projector)
    report.fallbacks = fallbacks + [r["fallback"] for r in report.tables.values() if r.get("fallback")]
    report.merge_seconds = round(time.monotonic() - t0, 3)
    report.seconds = round(time.monotonic() - started, 3)
    if arrivals:
        done = time.time()
        report.freshness_lag_max_s = round(done - min(arrivals), 3)
        report.freshness_lag_min_s = round(done - max(arrivals), 3)
    return report


def _without_corrupt_files(spark: SparkSession, lake: Lake, raw: DataFrame, files: list[str], batch_id: int, *,
                           app: str, now: datetime) -> tuple[DataFrame, set[str], list[str]]:
    """The batch's lines without its corrupt files, which are quarantined whole (once per batch id).

    Spark's reader would fail the batch, and the restarted stream would fail it again, forever.

    Returns:
        ``raw`` (or a read of the other files), the corrupt files' URIs as the source log
        names them (``files``' spelling), and their paths.

    """
    by_path = {local_path(uri): uri for uri in files}
    corrupt = find_corrupt(list(by_path))
    if not corrupt:
        return raw, set(), []
    quarantine_files(lake, corrupt, run_id=f"{app}-{batch_id}", now=now, app_id=app, batch_id=batch_id)
    bad = {by_path[c.path] for c in corrupt}
    return read_raw_files(spark, [uri for uri in files if uri not in bad]), bad, sorted(c.path for c in corrupt)


def _arrival_times(files: list[str]) -> list[float]:
    """Modification times (epoch seconds) of the batch's files: when each was renamed into the landing folder."""
    times = []
    for uri in files:
        fs, inner = filesystem_for(local_path(uri))
        info = fs.get_file_info(inner)
        if info.mtime_ns:
            times.append(info.mtime_ns / 1e9)
    return times


def update_features(spark: SparkSession, lake: Lake, cfg: RecsysConfig, *, now: datetime,
                    batch_id: int | None = None, projector: Projector | None = None) -> dict[str, dict[str, Any]]:
    """Fold every ``events`` version not yet covered into each feature table (and the online store)."""
    events_version = lake.version(EVENTS_TABLE)
    tables = list(entities(cfg.features).values())
    reads = _NewEvents(lake, cfg.streaming.local_max_events)  # the tables usually fold the same range: read it once
    done = {}
    # The tables are independent (each fenced by its own covered version), so they are updated
    # concurrently: Spark runs one table's jobs while the driver plans or commits another's.
    with ThreadPoolExecutor(max_workers=len(tables), thread_name_prefix="feature-merge") as pool:
        futures = {pool.submit(_update_entity, lake, cfg, e, events_version, now, batch_id, reads, projector): e.table
                   for e in tables}
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            fault_point("between_feature_merges")
    return {e.table: done[e.table] for e in tables}


@dataclass(frozen=True)
class Coverage:
    """Which events a feature table holds.

    Every event of ``events`` versions up to ``events_version``, except, after
    ``recsys features refresh --until T``, those later than ``until`` (T).
    """

    events_version: int
    until: datetime | None = None


def coverage(lake: Lake, table: str) -> Coverage:
    """What the newest commit recording an ``events_version`` says the table covers."""
    meta = lake.job_commit(table, "events_version")
    if meta is None:
        return Coverage(-1)
    until = meta.get("until")
    return Coverage(int(meta["events_version"]), None if until is None else datetime.fromisoformat(until))


def covered_events_version(lake: Lake, table: str) -> int:
    """The ``events`` version a feature table is complete up to (-1 if none)."""
    return coverage(lake, table).events_version


def events_between(lake: Lake, first_version: int, last_version: int) -> DataFrame:
    """Events inserted in ``events`` versions ``first_version``..``last_version``.

    ``events`` is append-only, so Spark reads the files those commits added
    (:meth:`Lake.inserted`); nothing passes through the driver.
    """
    return lake.inserted(EVENTS_TABLE, first_version, last_version).select(*EVENTS_SCHEMA.fieldNames())


def _update_entity(lake: Lake, cfg: RecsysConfig, entity: Entity, events_version: int, now: datetime,
                   batch_id: int | None, reads: _NewEvents, projector: Projector | None = None) -> dict[str, Any]:
    spec = table_spec(entity)
    lake.create(spec)
    for attempt in range(cfg.lake.commit_retries + 1):
        table_version = lake.version(entity.table)
        covers = coverage(lake, entity.table)
        covered = covers.events_version
        if covered >= events_version and covers.until is None:
            if projector is not None:  # e.g. a restart after a kill between the commit and the store write
                projector.table_committed(entity.table, table_version)
            return {"skipped": True, "version": table_version, "covered_events_version": covered}
        meta = {"job": "stream", "events_version": max(events_version, covered), "from_events_version": covered + 1,
                "batch_id": batch_id}
        if covers.until is not None:
            meta["folded_after"] = covers.until.isoformat()
        try:
            result, engine, touched, fallback = _merge_pending(lake, cfg, entity, reads, covered + 1,
                                                               events_version, table_version, now, meta,
                                                               after=covers.until)
        except LakeConflictError as exc:
            log.warning("feature merge into %s conflicted (attempt %d), recomputing: %s", entity.table,
                        attempt + 1, exc)
            continue
        fault_point("before_online_write")
        if projector is not None:
            projector.pending_committed(entity.table, touched, table_version, result.version)
        report: dict[str, Any] = {"skipped": False, "version": result.version, "pending_rows": result.rows,
                                  "covered_events_version": events_version, "folded_from": covered + 1,
                                  "engine": engine, "fallback": fallback,
                                  "dq": check_stream_batch(lake, entity, cfg.dq, result.version, batch_id)}
        if result.rows > cfg.streaming.pending_max_rows:
            fault_point("before_pending_compaction")
            try:
                report["compaction"] = compact_pending(lake, entity, cfg.features, metadata={"batch_id": batch_id})
                if projector is not None:
                    projector.table_committed(entity.table)
                report["published"] = publish_all(lake, cfg, [entity])[entity.table]
            except LakeConflictError as exc:
                log.warning("compacting the pending layer of %s conflicted; the next batch retries: %s",
                            entity.table, exc)
        return report
    raise LakeConflictError(f"feature merge into '{entity.table}' kept conflicting with concurrent writers "
                            f"after {cfg.lake.commit_retries + 1} attempts")


#: Failures of a driver-local step on data it cannot take, which Spark handles: the step falls back to
#: Spark. Any other error is a bug and fails the batch (the stream restarts it from its checkpoint).
LOCAL_FAILURES = (ValueError, ArithmeticError, pa.ArrowException)


def _fell_back(step: str, exc: BaseException) -> str:
    """Log a driver-local step's failure at WARNING; returns the cause for the batch report."""
    cause = f"{type(exc).__name__}: {exc}"
    log.warning("%s failed, Spark does it instead: %s", step, cause)
    return f"{step}: {cause}"


class _NewEvents:
    """The ``events`` rows of a version range read and prepared on the driver, once per range.

    None: more than ``limit`` rows (or ``limit`` is 0): Spark folds them.
    """

    def __init__(self, lake: Lake, limit: int) -> None:
        self.lake, self.limit = lake, limit
        self._read: dict[tuple[int, int], LocalEvents | None] = {}
        self._lock = threading.Lock()

    def get(self, first: int, last: int) -> LocalEvents | None:
        if not self.limit:
            return None
        with self._lock:
            if (first, last) not in self._read:
                rows = self.lake.inserted_arrow(EVENTS_TABLE, first, last, max_rows=self.limit)
                self._read[(first, last)] = None if rows is None else LocalEvents(rows)
            return self._read[(first, last)]


def _merge_pending(lake: Lake, cfg: RecsysConfig, entity: Entity, reads: _NewEvents, first: int, last: int,
                   table_version: int, now: datetime, meta: dict[str, Any],
                   after: datetime | None = None) -> tuple[CommitResult, str, pa.Table | None, str | None]:
    """Fold ``events`` versions ``first``..``last`` into the pending layer read at ``table_version``; commit.

    Up to ``streaming.local_max_events`` new events, on the driver (:mod:`recsys_lib.features.local`);
    more, or if the local fold fails, with Spark. Returns the commit, the engine used (``local`` or
    ``spark``), from the driver the new pending rows of the keys the batch touched (None from Spark),
    and why the driver's fold fell back to Spark (None if it did not).

    ``after``: the table was last refreshed with ``--until after``, so the events of versions
    before ``first`` that are later than ``after`` are folded too (with Spark: a one-off).
    """
    spec = table_spec(entity)
    contents_local = None
    fallback = None
    try:
        new_local = reads.get(first, last) if after is None else None
        if new_local is not None:
            state = fold_local(new_local, entity, cfg.features, now)
            pending_local = lake.read_arrow(entity.table, version=table_version, partitions=(BUCKET, [PENDING]))
            contents_local = overlay_local(pending_local, state, entity, cfg.features, now)
    except LOCAL_FAILURES as exc:  # e.g. a timestamp outside Python's years 1..9999: Spark folds it
        fallback = _fell_back(f"driver-local fold into {entity.table}", exc)
    else:
        if contents_local is not None:
            result = lake.replace_partitions_arrow(spec, contents_local, BUCKET, [PENDING],
                                                   read_version=table_version, metadata=meta)
            return result, "local", touched_rows(contents_local, state, entity), None
    new = events_between(lake, first, last) if first <= last else None
    if after is not None and first > 0:  # what the --until refresh left out of the versions it read
        left_out = lake.read(EVENTS_TABLE, version=first - 1).where(F.col("event_ts") > F.lit(after))
        left_out = left_out.select(*EVENTS_SCHEMA.fieldNames())
        new = left_out if new is None else new.unionByName(left_out)
    if new is None:
        raise ValueError(f"nothing to fold into {entity.table}: versions {first}..{last} and no refresh cut-off")
    batch_state = fold(new, entity, cfg.features, updated_at=now).persist()  # read twice by overlay
    try:
        pending = lake.read(entity.table, version=table_version, partitions=(BUCKET, [PENDING]))
        contents = as_pending(overlay(pending, batch_state, entity, cfg.features, updated_at=now)).coalesce(1)
        return lake.replace_partitions(spec, contents, BUCKET, [PENDING], read_version=table_version,
                                       metadata=meta), "spark", None, fallback
    finally:
        batch_state.unpersist()
