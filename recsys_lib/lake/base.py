"""What every lake engine offers, plus the shared commit-retry policy."""

from __future__ import annotations

import json
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys_lib.lake.errors import LakeConflictError, TableNotFound
from recsys_lib.lake.files import spark_to_arrow
from recsys_lib.lake.lease import Lease, LeaseStore

log = logging.getLogger(__name__)
R = TypeVar("R")
#: ``(read_version, current_version) -> bool``: whether what was computed at ``read_version`` still holds
#: after the commits up to ``current_version`` (see :meth:`Lake.append`).
StillValid = Callable[[int, int], bool]

#: Properties every table gets: change data feed on, no column mapping.
DEFAULT_TABLE_PROPERTIES: dict[str, str] = {
    "delta.enableChangeDataFeed": "true",
    "delta.appendOnly": "false",
}


def schema_drift(spec: TableSpec, stored: pa.Schema, partition_by: Sequence[str]) -> str:
    """What differs between ``spec`` and a stored table ('' if nothing): columns missing, unexpected or retyped.

    Nullability is not compared (Spark and Delta disagree on it for the same data).
    """
    expected = spark_to_arrow(spec.schema)
    problems = []
    missing = [n for n in expected.names if n not in stored.names]
    extra = [n for n in stored.names if n not in expected.names]
    retyped = [f"{f.name} ({stored.field(f.name).type} stored, {f.type} written)" for f in expected
               if f.name in stored.names and not stored.field(f.name).type.equals(f.type)]
    if missing:
        problems.append("missing in the table: " + ", ".join(missing))
    if extra:
        problems.append("not written by this code: " + ", ".join(extra))
    if retyped:
        problems.append("other types: " + ", ".join(retyped))
    if list(partition_by) != list(spec.partition_by):
        problems.append(f"partitioned by {list(partition_by)}, written by {list(spec.partition_by)}")
    return "; ".join(problems)


@dataclass(frozen=True)
class TableSpec:
    """A Delta table's name, schema, partitioning and properties."""

    name: str
    schema: T.StructType
    partition_by: tuple[str, ...] = ()
    properties: Mapping[str, str] = field(default_factory=dict)

    def all_properties(self) -> dict[str, str]:
        """Default properties overlaid with this table's own."""
        return {**DEFAULT_TABLE_PROPERTIES, **self.properties}


@dataclass(frozen=True)
class CommitResult:
    """What one write did.

    Attributes:
        version: The table version committed, or the current one when skipped.
        skipped: True when the (app id, batch id) was already committed, or there was nothing to do.
        rows: Rows added by the commit (from file statistics).
        files: Files added by the commit.

    """

    version: int
    skipped: bool = False
    rows: int = 0
    files: int = 0


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter for commit conflicts."""

    attempts: int = 6
    backoff: float = 0.05
    backoff_max: float = 5.0

    def run(self, action: Callable[[int], R], *, is_conflict: Callable[[BaseException], bool],
            table: str, what: str) -> R:
        """Call ``action(attempt)`` until it succeeds, retrying only conflicts.

        Raises:
            LakeConflictError: When every attempt conflicted.

        """
        last: BaseException | None = None
        for attempt in range(self.attempts + 1):
            try:
                return action(attempt)
            except Exception as exc:  # noqa: BLE001 - filtered just below
                if not is_conflict(exc):
                    raise
                last = exc
                if attempt == self.attempts:
                    break
                delay = min(self.backoff_max, self.backoff * (2**attempt))
                delay *= 0.5 + random.random()
                log.warning("%s on %s conflicted (attempt %d): %s; retrying in %.2fs",
                            what, table, attempt + 1, exc, delay)
                time.sleep(delay)
        raise LakeConflictError(
            f"{what} on table '{table}' still conflicted after {self.attempts + 1} attempts; "
            f"last error: {last}"
        ) from last


class Lake(ABC):
    """Delta I/O for every job. Spark computes; the engine commits."""

    engine_name: str = "abstract"

    def __init__(self, spark: SparkSession, root: str, *, retry: RetryPolicy | None = None,
                 storage_options: Mapping[str, str] | None = None, lease_ttl: float = 60.0,
                 lease_wait: float = 600.0) -> None:
        self.spark = spark
        self.root = root.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.storage_options = dict(storage_options or {})
        #: Writer leases (:mod:`recsys_lib.lake.lease`): every data commit checks its table's.
        self.leases = LeaseStore(self.root, ttl=lease_ttl)
        self.lease_wait = lease_wait

    def writing(self, tables: Sequence[str], owner: str, *, wait: float | None = None) -> Lease:
        """Take the writer leases of ``tables`` for the job ``owner`` (a context manager that gives them back).

        Other jobs' commits to those tables are refused until then (:mod:`recsys_lib.lake.lease`).

        Raises:
            LeaseHeld: Another job still held one after ``wait`` seconds (default: ``lake.lease_wait``).

        """
        return self.leases.acquire(tables, owner, wait=self.lease_wait if wait is None else wait)

    def uri(self, name: str) -> str:
        """Location of the named table."""
        return f"{self.root}/{name}"

    @abstractmethod
    def exists(self, name: str) -> bool:
        """True if the table has a Delta log."""

    @abstractmethod
    def create(self, spec: TableSpec) -> int:
        """Create the table if missing (with CDF on); return its version."""

    @abstractmethod
    def append(self, spec: TableSpec, df: DataFrame, *, app_id: str | None = None,
               batch_id: int | None = None, metadata: Mapping[str, Any] | None = None,
               read_version: int | None = None, still_valid: StillValid | None = None) -> CommitResult:
        """Append ``df``; a repeated (app id, batch id) is skipped.

        ``read_version``: the version ``df`` was computed against (e.g. deduplicated with):
        the commit is refused with :class:`LakeConflictError` if anyone committed since
        (optimistic concurrency), where a plain append would land blindly on top. Unless
        ``still_valid(read_version, now)`` says the commits in between do not touch ``df``:
        then the same files are committed on top of them (up to the retry policy's attempts).
        """

    @abstractmethod
    def overwrite(self, spec: TableSpec, df: DataFrame, *, app_id: str | None = None,
                  batch_id: int | None = None, metadata: Mapping[str, Any] | None = None) -> CommitResult:
        """Replace the table's contents with ``df`` in one commit (full refresh)."""

    @abstractmethod
    def merge(self, spec: TableSpec, df: DataFrame, keys: Sequence[str], *,
              update: Mapping[str, str] | None = None, app_id: str | None = None,
              batch_id: int | None = None, metadata: Mapping[str, Any] | None = None,
              read_version: int | None = None) -> CommitResult:
        """Upsert ``df`` by ``keys``.

        Args:
            update: Column -> SQL expression over ``t`` (target) and ``s`` (source)
                for matched rows; default replaces every column with the source's.
            read_version: The table version ``df`` was computed from. The merge then
                runs on that snapshot and is not retried: a conflicting concurrent
                commit raises :class:`LakeConflictError`, so the caller recomputes.

        """

    @abstractmethod
    def replace_partitions(self, spec: TableSpec, df: DataFrame, column: str, values: Sequence[Any], *,
                           read_version: int, metadata: Mapping[str, Any] | None = None) -> CommitResult:
        """Replace every row whose partition ``column`` is in ``values`` with ``df``'s rows, in one commit.

        A copy-on-write merge done by Spark: ``df`` must hold the complete new contents
        of those partitions (rows outside them are an error of the caller). Executors
        write the files; nothing passes through the driver.

        Args:
            read_version: The version ``df`` was computed from. A concurrent commit
                since then raises :class:`LakeConflictError` (no retry: the caller recomputes).

        """

    @abstractmethod
    def read(self, name: str, *, version: int | None = None, timestamp: datetime | str | None = None,
             partitions: tuple[str, Sequence[Any]] | None = None) -> DataFrame:
        """The table as a Spark DataFrame, now or at a version or timestamp.

        ``partitions=(column, values)`` reads only the files of those partitions.
        """

    def read_arrow(self, name: str, *, version: int | None = None,
                   partitions: tuple[str, Sequence[Any]] | None = None,
                   columns: Sequence[str] | None = None) -> pa.Table:
        """Like :meth:`read`, into an Arrow table on the driver: small tables, partitions or columns only."""
        df = self.read(name, version=version, partitions=partitions)
        return (df.select(*columns) if columns is not None else df).toArrow()

    def inserted_arrow(self, name: str, since_version: int, until_version: int, *,
                       max_rows: int, columns: Sequence[str] | None = None) -> pa.Table | None:
        """Like :meth:`inserted`, on the driver, or None when the range holds more than ``max_rows`` rows.

        None also when the engine cannot tell cheaply (the caller then uses Spark).
        """
        return None

    def append_arrow(self, spec: TableSpec, table: pa.Table, *, app_id: str | None = None,
                     batch_id: int | None = None, metadata: Mapping[str, Any] | None = None,
                     read_version: int | None = None, still_valid: StillValid | None = None) -> CommitResult:
        """:meth:`append` of a small Arrow table that the driver writes."""
        return self.append(spec, self.spark.createDataFrame(table), app_id=app_id, batch_id=batch_id,
                           metadata=metadata, read_version=read_version, still_valid=still_valid)

    def replace_partitions_arrow(self, spec: TableSpec, table: pa.Table, column: str, values: Sequence[Any], *,
                                 read_version: int, metadata: Mapping[str, Any] | None = None) -> CommitResult:
        """:meth:`replace_partitions` with a small Arrow table that the driver writes."""
        df = self.spark.createDataFrame(table)
        return self.replace_partitions(spec, df, column, values, read_version=read_version, metadata=metadata)

    @abstractmethod
    def version(self, name: str) -> int:
        """The table's current version."""

    @abstractmethod
    def txn_version(self, name: str, app_id: str) -> int | None:
        """The last batch id committed by ``app_id``, if any."""

    @abstractmethod
    def history(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Commit history, newest first."""

    def job_metadata(self, name: str, key: str, limit: int = 100) -> Any:
        """The newest value of ``key`` in the suite's commit metadata (``recsys``), or None."""
        found = self.job_commit(name, key, limit)
        return None if found is None else found[key]

    def job_commit(self, name: str, key: str, limit: int = 100) -> dict[str, Any] | None:
        """The suite's whole commit metadata (``recsys``) of the newest commit that records ``key``, or None."""
        for entry in self.history(name, limit=limit):
            meta = entry.get("recsys")
            if meta:
                values = json.loads(meta)
                if values.get(key) is not None:
                    return dict(values)
        return None

    @abstractmethod
    def changes(self, name: str, since_version: int, until_version: int | None = None) -> DataFrame:
        """Change data feed rows (with ``_change_type`` and ``_commit_version``)."""

    def changes_arrow(self, name: str, since_version: int, until_version: int,
                      columns: Sequence[str] | None = None) -> pa.Table:
        """The change data feed for versions ``since_version``..``until_version`` on the driver.

        Columns: ``columns`` (default: all) plus ``_change_type`` and ``_commit_version``.
        """
        df = self.changes(name, since_version, until_version)
        keep = [*(columns or [c for c in df.columns if not c.startswith("_")]), "_change_type", "_commit_version"]
        return df.select(*keep).toArrow()

    def inserted(self, name: str, since_version: int, until_version: int) -> DataFrame:
        """Rows inserted by versions ``since_version``..``until_version``, in the table's columns."""
        changes = self.changes(name, since_version, until_version)
        extra = [c for c in changes.columns if c.startswith("_commit_") or c == "_change_type"]
        return changes.where(F.col("_change_type") == "insert").drop(*extra)

    @abstractmethod
    def delete(self, name: str, predicate: str, *, metadata: Mapping[str, Any] | None = None) -> CommitResult:
        """Delete the rows matching the SQL ``predicate`` in one commit (``rows``: how many).

        The rows stay readable in older versions, and the predicate is in the log, until
        :meth:`purge_history`.
        """

    @abstractmethod
    def note(self, name: str, metadata: Mapping[str, Any]) -> int:
        """Commit the suite's ``metadata`` to ``name`` with no data change; return the new version."""

    @abstractmethod
    def purge_history(self, name: str, *, carry: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Drop every version but the current one: unreferenced data and change-feed files, and the log.

        The one step that bypasses the retention check (``recsys forget``): time travel and
        change-feed reads of older versions end here. ``carry``: suite metadata to commit again
        afterwards (a feature table's coverage, which readers take from the history).
        """

    @abstractmethod
    def compact(self, name: str) -> dict[str, Any]:
        """Bin-pack small files; retried on conflict."""

    @abstractmethod
    def vacuum(self, name: str, retention_hours: float = 168.0) -> list[str]:
        """Delete files no version within the retention needs; return them."""

    def _require(self, name: str) -> None:
        if not self.exists(name):
            raise TableNotFound(f"Delta table '{name}' does not exist at {self.uri(name)}")
