"""The delta-rs engine: Spark writes Parquet, delta-rs commits the Delta log.

* append / overwrite: executors write Parquet into ``<table>/<write id>/``; the
  driver reads only the footers and commits all add actions in one transaction.
* merge: delta-rs merges an Arrow copy of the source. Sources are micro-batches
  or feature deltas, so they are small; large rewrites use :meth:`overwrite`.
* reads: Spark reads the snapshot's file list; partition values come from the
  add actions through a broadcast join on the file name.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import RemoveAction
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from recsys_lib.lake.base import (
    CommitResult,
    Lake,
    StillValid,
    TableSpec,
    schema_drift,
)
from recsys_lib.lake.errors import CorruptLog, LakeConflictError, LakeError, SchemaDrift, TableNotFound
from recsys_lib.lake.files import (
    arrow_to_spark,
    check_hive_layout,
    filesystem_for,
    partition_value_from_path,
    plain_arrow_type,
    plain_encoded,
    read_files_arrow,
    spark_to_arrow,
    write_arrow_files,
)
from recsys_lib.lake.log import appended_files, files_in, partition_text, unreadable_commit
from recsys_lib.lake.staged import Staged, staged, write_folder

log = logging.getLogger(__name__)

#: Retention properties set to zero while a history is purged, with Delta's defaults to restore.
_RETENTIONS = {"delta.logRetentionDuration": "interval 30 days",
               "delta.deletedFileRetentionDuration": "interval 1 week"}
_CONFLICT_WORDS = ("conflict", "concurrent", "version already exists", "transaction failed")


def is_conflict(exc: BaseException) -> bool:
    """True for delta-rs errors that a retry on a fresh snapshot can fix."""
    if isinstance(exc, CommitFailedError):
        return True
    text = str(exc).lower()
    return type(exc).__module__.startswith("deltalake") and any(w in text for w in _CONFLICT_WORDS)


class DeltaRsLake(Lake):
    """Delta tables committed by delta-rs (no Delta jar needed)."""

    engine_name = "delta-rs"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Latest-version handles, brought up to date incrementally (reading only new commits).
        self._latest: dict[str, DeltaTable] = {}
        self._latest_lock = threading.Lock()

    # -- table handles -------------------------------------------------------
    def _table(self, name: str, version: int | None = None) -> DeltaTable:
        try:
            return DeltaTable(self.uri(name), version=version, storage_options=self.storage_options or None)
        except TableNotFoundError:
            raise TableNotFound(f"Delta table '{name}' does not exist at {self.uri(name)}") from None
        except DeltaError as exc:
            bad = unreadable_commit(self.uri(name))
            if bad is None:
                raise
            path, number, why = bad
            raise CorruptLog(f"table '{name}' cannot be read: its log entry for version {number} ({path}) is not "
                             f"valid JSON ({why}). Nothing falls back to an older version silently: restore that "
                             "file from a backup, or, if it was the last commit and never completed, move it "
                             "aside") from exc

    def exists(self, name: str) -> bool:
        return DeltaTable.is_deltatable(self.uri(name), storage_options=self.storage_options or None)

    def create(self, spec: TableSpec) -> int:
        if not self.exists(spec.name):
            try:
                DeltaTable.create(
                    self.uri(spec.name), spark_to_arrow(spec.schema), mode="ignore",
                    partition_by=list(spec.partition_by) or None, name=spec.name,
                    configuration=spec.all_properties(), storage_options=self.storage_options or None,
                )
            except CommitFailedError:
                pass  # another writer created it first
        version = self.version(spec.name)
        self._check_schema(spec, version)
        return version

    def _check_schema(self, spec: TableSpec, version: int) -> None:
        """Refuse to write ``spec``'s columns into a table stored with others.

        Reads the schema from the cached latest handle :meth:`version` just refreshed (no log replay).

        Raises:
            SchemaDrift: Naming the missing, unexpected and retyped columns.

        """
        with self._latest_lock:
            handle = self._latest[self.uri(spec.name)]
            stored = pa.schema(handle.schema().to_arrow())
            partitions = list(handle.metadata().partition_columns)
        drift = schema_drift(spec, stored, partitions)
        if drift:
            raise SchemaDrift(f"table '{spec.name}' at {self.uri(spec.name)} (version {version}) is stored with "
                              f"other columns than this code writes: {drift}. Nothing was written; migrate the "
                              "table, or recompute it with a full refresh, before writing to it again")

    def version(self, name: str) -> int:
        uri = self.uri(name)
        with self._latest_lock:
            handle = self._latest.get(uri)
            try:
                if handle is None:
                    raise KeyError(uri)
                handle.update_incremental()
            except Exception:  # noqa: BLE001 - not cached yet, or the log moved on in a way only a reopen reads
                handle = self._latest[uri] = self._table(name)
            return handle.version()

    def txn_version(self, name: str, app_id: str) -> int | None:
        return self._table(name).transaction_version(app_id)

    # -- writes --------------------------------------------------------------
    def append(self, spec: TableSpec, df: DataFrame, *, app_id: str | None = None,
               batch_id: int | None = None, metadata: Mapping[str, Any] | None = None,
               read_version: int | None = None, still_valid: StillValid | None = None) -> CommitResult:
        return self._write_files(spec, df, "append", app_id, batch_id, metadata, read_version, still_valid)

    def overwrite(self, spec: TableSpec, df: DataFrame, *, app_id: str | None = None,
                  batch_id: int | None = None, metadata: Mapping[str, Any] | None = None) -> CommitResult:
        return self._write_files(spec, df, "overwrite", app_id, batch_id, metadata)

    def append_arrow(self, spec: TableSpec, table: pa.Table, *, app_id: str | None = None,
                     batch_id: int | None = None, metadata: Mapping[str, Any] | None = None,
                     read_version: int | None = None, still_valid: StillValid | None = None) -> CommitResult:
        return self._write_files(spec, lambda: self._write_arrow(spec, table), "append", app_id, batch_id, metadata,
                                 read_version, still_valid)

    def _write_files(self, spec: TableSpec, df: DataFrame | Callable[[], Staged], mode: str, app_id: str | None,
                     batch_id: int | None, metadata: Mapping[str, Any] | None,
                     read_version: int | None = None, still_valid: StillValid | None = None) -> CommitResult:
        self.create(spec)
        done = self._already_committed(spec.name, app_id, batch_id)
        if done is not None:
            return done
        written = df() if callable(df) else self._write_parquet(spec, df)
        if not written.adds and mode == "append" and app_id is None:
            written.discard()
            return CommitResult(version=self.version(spec.name), skipped=True)

        def transact(table: DeltaTable, retries: int | None = None) -> None:
            self.leases.check_commit(spec.name)
            properties = self._commit_properties(app_id, batch_id, metadata)
            properties.max_commit_retries = retries
            table.create_write_transaction(list(written.adds), mode=mode, schema=spark_to_arrow(spec.schema),
                                           partition_by=list(spec.partition_by) or None,
                                           commit_properties=properties)

        def commit(_attempt: int) -> CommitResult:
            table = self._table(spec.name)
            done = _done(table, app_id, batch_id)
            if done is not None:
                return done
            transact(table)
            table.update_incremental()
            return CommitResult(version=table.version(), rows=written.rows, files=len(written.adds))

        def commit_at_read_version(read_version: int) -> CommitResult:
            try:
                transact(self._table(spec.name, read_version), retries=0)  # on read_version + 1, or not at all
            except CommitFailedError as exc:
                raise LakeConflictError(
                    f"{mode} to table '{spec.name}' was computed against version {read_version}, but another "
                    f"writer committed version {read_version + 1} first (now at {self.version(spec.name)}); "
                    "nothing was written: recompute against the new version") from exc
            return CommitResult(version=read_version + 1, rows=written.rows, files=len(written.adds))

        def commit_optimistic(read_version: int) -> CommitResult:
            for _attempt in range(self.retry.attempts):
                try:
                    return commit_at_read_version(read_version)
                except LakeConflictError:
                    now = self.version(spec.name)
                    if still_valid is None or not still_valid(read_version, now):
                        raise
                    log.info("%s to %s: versions %d..%d do not touch what was computed; committing on top",
                             mode, spec.name, read_version + 1, now)
                    read_version = now
            return commit_at_read_version(read_version)

        if read_version is not None:
            return written.commit_or_discard(lambda: commit_optimistic(read_version))
        return written.commit_or_discard(
            lambda: self.retry.run(commit, is_conflict=is_conflict, table=spec.name, what=mode))

    def replace_partitions(self, spec: TableSpec, df: DataFrame, column: str, values: Sequence[Any], *,
                           read_version: int, metadata: Mapping[str, Any] | None = None) -> CommitResult:
        return self._replace(spec, lambda: self._write_parquet(spec, df), column, values, read_version, metadata)

    def replace_partitions_arrow(self, spec: TableSpec, table: pa.Table, column: str, values: Sequence[Any], *,
                                 read_version: int, metadata: Mapping[str, Any] | None = None) -> CommitResult:
        return self._replace(spec, lambda: self._write_arrow(spec, table), column, values, read_version, metadata)

    def _replace(self, spec: TableSpec, write: Callable[[], Staged], column: str, values: Sequence[Any],
                 read_version: int, metadata: Mapping[str, Any] | None) -> CommitResult:
        if column not in spec.partition_by:
            raise ValueError(f"replace_partitions on '{spec.name}': '{column}' is not a partition column "
                             f"(partitioned by {list(spec.partition_by)})")
        table = self._table(spec.name, version=read_version)
        old = files_in(pa.table(table.get_add_actions(flatten=True)), column, values)
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        removes = [
            RemoveAction(path=path, data_change=True, deletion_timestamp=now_ms, size=size,
                         partition_values={c: partition_text(old.column(f"partition.{c}")[i].as_py())
                                           for c in spec.partition_by})
            for i, (path, size) in enumerate(zip(old.column("path").to_pylist(), old.column("size_bytes").to_pylist(),
                                                 strict=True))
        ]
        written = write()
        if not written.adds and not removes:
            written.discard()
            return CommitResult(version=read_version, skipped=True)

        def commit() -> CommitResult:
            self.leases.check_commit(spec.name)
            try:
                table.create_write_transaction(
                    [*written.adds, *removes], mode="append", schema=spark_to_arrow(spec.schema),
                    partition_by=list(spec.partition_by) or None,
                    commit_properties=self._commit_properties(None, None, metadata),
                )
            except Exception as exc:
                if is_conflict(exc):
                    raise LakeConflictError(
                        f"replacing partitions of table '{spec.name}' read at version {read_version} "
                        f"conflicted with a concurrent commit: {exc}") from exc
                raise
            table.update_incremental()
            return CommitResult(version=table.version(), rows=written.rows, files=len(written.adds))

        return written.commit_or_discard(commit)

    def _write_parquet(self, spec: TableSpec, df: DataFrame) -> Staged:
        """Executors write ``df`` as Parquet into a fresh folder of the table; the driver builds add actions."""
        folder = write_folder()
        writer = df.select(*spec.schema.fieldNames()).write.mode("errorifexists")
        for name in plain_encoded(spec.schema):
            writer = writer.option(f"parquet.enable.dictionary#{name}", "false")
        if spec.partition_by:
            writer = writer.partitionBy(*spec.partition_by)
        writer.parquet(f"{self.uri(spec.name)}/{folder}")
        return staged(self.uri(spec.name), folder, spec.partition_by)

    def _write_arrow(self, spec: TableSpec, table: pa.Table) -> Staged:
        """The driver writes a small Arrow table as Parquet into a fresh folder of the table."""
        folder = write_folder()
        fs, table_path = filesystem_for(self.uri(spec.name))
        write_arrow_files(fs, f"{table_path}/{folder}", table.select(spec.schema.fieldNames()), spec.partition_by)
        return staged(self.uri(spec.name), folder, spec.partition_by)

    def merge(self, spec: TableSpec, df: DataFrame, keys: Sequence[str], *,
              update: Mapping[str, str] | None = None, app_id: str | None = None,
              batch_id: int | None = None, metadata: Mapping[str, Any] | None = None,
              read_version: int | None = None) -> CommitResult:
        if not keys:
            raise ValueError(f"merge into '{spec.name}' needs at least one key column")
        self.create(spec)
        done = self._already_committed(spec.name, app_id, batch_id)
        if done is not None:
            return done
        source = df.select(*spec.schema.fieldNames()).toArrow()
        source = source.cast(spark_to_arrow(spec.schema))
        predicate = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        updates = dict(update) if update is not None else {
            c: f"s.`{c}`" for c in spec.schema.fieldNames() if c not in keys
        }

        def run(_attempt: int) -> CommitResult:
            table = self._table(spec.name, version=read_version)
            done = _done(table, app_id, batch_id)
            if done is not None:
                return done
            if source.num_rows == 0 and app_id is None:
                return CommitResult(version=table.version(), skipped=True)
            self.leases.check_commit(spec.name)
            merger = table.merge(
                source, predicate, source_alias="s", target_alias="t",
                commit_properties=self._commit_properties(app_id, batch_id, metadata),
            )
            if updates:
                merger = merger.when_matched_update(updates=updates)
            stats = merger.when_not_matched_insert_all().execute()
            table.update_incremental()
            rows = int(stats.get("num_target_rows_inserted", 0)) + int(stats.get("num_target_rows_updated", 0))
            return CommitResult(version=table.version(), rows=rows,
                                files=int(stats.get("num_target_files_added", 0)))

        if read_version is not None:
            try:
                return run(0)
            except Exception as exc:
                if is_conflict(exc):
                    raise LakeConflictError(f"merge on table '{spec.name}' computed from version {read_version} "
                                            f"conflicted with a concurrent commit: {exc}") from exc
                raise
        return self.retry.run(run, is_conflict=is_conflict, table=spec.name, what="merge")

    def _already_committed(self, name: str, app_id: str | None, batch_id: int | None) -> CommitResult | None:
        if (app_id is None) != (batch_id is None):
            raise ValueError(f"write to '{name}': give both app_id and batch_id, or neither")
        if app_id is None or batch_id is None:
            return None
        return _done(self._table(name), app_id, batch_id)

    @staticmethod
    def _commit_properties(app_id: str | None, batch_id: int | None,
                           metadata: Mapping[str, Any] | None) -> CommitProperties:
        txns = [Transaction(app_id=app_id, version=batch_id)] if app_id is not None and batch_id is not None else None
        custom = {"recsys": json.dumps(dict(metadata), default=str)} if metadata else None
        return CommitProperties(custom_metadata=custom, app_transactions=txns)

    # -- reads ---------------------------------------------------------------
    def read(self, name: str, *, version: int | None = None, timestamp: datetime | str | None = None,
             partitions: tuple[str, Sequence[Any]] | None = None) -> DataFrame:
        table = self._table(name, version=version)
        if timestamp is not None:
            table.load_as_version(timestamp if isinstance(timestamp, datetime) else datetime.fromisoformat(timestamp))
        return self._snapshot_df(table, partitions)

    def _snapshot_df(self, table: DeltaTable, partitions: tuple[str, Sequence[Any]] | None = None) -> DataFrame:
        partition_by = list(table.metadata().partition_columns)
        actions = pa.table(table.get_add_actions(flatten=True))
        if partitions is not None:
            column, values = partitions
            if column not in partition_by:
                raise ValueError(f"{table.table_uri}: '{column}' is not a partition column ({partition_by})")
            actions = files_in(actions, column, values)
        return self._files_df(table, actions)

    def read_arrow(self, name: str, *, version: int | None = None,
                   partitions: tuple[str, Sequence[Any]] | None = None,
                   columns: Sequence[str] | None = None) -> pa.Table:
        table = self._table(name, version=version)
        actions = pa.table(table.get_add_actions(flatten=True))
        if partitions is not None:
            actions = files_in(actions, *partitions)
        return self._files_arrow(table, actions, columns)

    def inserted_arrow(self, name: str, since_version: int, until_version: int, *,
                       max_rows: int, columns: Sequence[str] | None = None) -> pa.Table | None:
        table = self._table(name, version=until_version)
        actions = appended_files(table.table_uri, since_version, until_version,
                                 list(table.metadata().partition_columns))
        if actions is None or actions.column("num_records").null_count:
            return None
        if sum(actions.column("num_records").to_pylist()) > max_rows:
            return None
        return self._files_arrow(table, actions, columns)

    def _files_arrow(self, table: DeltaTable, actions: pa.Table, columns: Sequence[str] | None = None) -> pa.Table:
        """The files named by ``actions`` read on the driver, in the table's schema."""
        schema = spark_to_arrow(arrow_to_spark(pa.schema(table.schema().to_arrow())))
        partition_by = list(table.metadata().partition_columns)
        fs, table_path = filesystem_for(table.table_uri.rstrip("/"))
        values = {c: actions.column(f"partition.{c}").to_pylist() for c in partition_by}
        return read_files_arrow(fs, table_path, actions.column("path").to_pylist(), values, schema, columns)

    def inserted(self, name: str, since_version: int, until_version: int) -> DataFrame:
        """Append-only ranges are read by Spark straight from the added files; others through the change feed."""
        table = self._table(name, version=until_version)
        actions = appended_files(table.table_uri, since_version, until_version,
                                  list(table.metadata().partition_columns))
        if actions is None:
            return super().inserted(name, since_version, until_version)
        return self._files_df(table, actions)

    def _files_df(self, table: DeltaTable, actions: pa.Table) -> DataFrame:
        """Spark over the files named by ``actions`` (``path`` and ``partition.<column>``), in the table's schema."""
        schema = arrow_to_spark(pa.schema(table.schema().to_arrow()))
        partition_by = list(table.metadata().partition_columns)
        data_schema = T.StructType([f for f in schema.fields if f.name not in partition_by])
        rel_paths = actions.column("path").to_pylist()
        if not rel_paths:
            return self.spark.createDataFrame([], schema)
        if partition_by:
            check_hive_layout(rel_paths, {c: actions.column(f"partition.{c}").to_pylist() for c in partition_by},
                              table=table.table_uri)
        df = self.spark.read.schema(data_schema).parquet(*[f"{self.uri_of(table)}/{p}" for p in rel_paths])
        for field in schema.fields:
            if field.name in partition_by:
                df = df.withColumn(field.name, partition_value_from_path(field.name).cast(field.dataType))
        return df.select(*schema.fieldNames())

    def uri_of(self, table: DeltaTable) -> str:
        """The table root as Spark should read it."""
        return table.table_uri.rstrip("/")

    def history(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        return self._table(name).history(limit)

    def changes(self, name: str, since_version: int, until_version: int | None = None) -> DataFrame:
        changes = self._cdf(name, since_version, until_version)
        fields = [pa.field(f.name, pa.int64() if pa.types.is_unsigned_integer(f.type) else plain_arrow_type(f.type))
                  for f in changes.schema]
        return self.spark.createDataFrame(changes.cast(pa.schema(fields)))

    def changes_arrow(self, name: str, since_version: int, until_version: int,
                      columns: Sequence[str] | None = None) -> pa.Table:
        wanted = None if columns is None else [*columns, "_change_type", "_commit_version"]
        changes = self._cdf(name, since_version, until_version, wanted)
        return changes.cast(pa.schema([pa.field(f.name, plain_arrow_type(f.type)) for f in changes.schema]))

    def _cdf(self, name: str, since_version: int, until_version: int | None,
             columns: list[str] | None = None) -> pa.Table:
        """The change feed as Arrow; versions no longer in the log are a :class:`LakeError` naming them."""
        try:
            return pa.table(self._table(name).load_cdf(starting_version=since_version, ending_version=until_version,
                                                       columns=columns))
        except (DeltaError, pa.ArrowInvalid) as exc:
            text = str(exc).lower()
            if "version" not in text and "not found" not in text:
                raise
            raise LakeError(f"the change feed of table '{name}' from version {since_version} cannot be read: "
                            f"{exc} (a vacuum or `recsys forget` removed that history); read the table instead"
                            ) from exc

    # -- deletes and history ------------------------------------------------
    def delete(self, name: str, predicate: str, *, metadata: Mapping[str, Any] | None = None) -> CommitResult:
        self._require(name)

        def run(_attempt: int) -> CommitResult:
            self.leases.check_commit(name)
            table = self._table(name)
            stats = table.delete(predicate, commit_properties=self._commit_properties(None, None, metadata))
            table.update_incremental()
            return CommitResult(version=table.version(), rows=int(stats.get("num_deleted_rows", 0)),
                                files=int(stats.get("num_added_files", 0)))

        return self.retry.run(run, is_conflict=is_conflict, table=name, what="delete")

    def note(self, name: str, metadata: Mapping[str, Any]) -> int:
        self._require(name)
        self.leases.check_commit(name)
        table = self._table(name)
        table.create_write_transaction([], mode="append", schema=table.schema(),
                                       commit_properties=self._commit_properties(None, None, metadata))
        return self.version(name)

    def purge_history(self, name: str, *, carry: Mapping[str, Any] | None = None) -> dict[str, Any]:
        self._require(name)
        table = self._table(name)
        before = dict(table.metadata().configuration)
        table.alter.set_table_properties({k: "interval 0 seconds" for k in _RETENTIONS})
        removed = table.vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False, full=True)
        table.update_incremental()
        table.create_checkpoint()
        kept_from = table.version()
        table.cleanup_metadata()  # every log entry before the checkpoint: the old adds' stats, deletes' predicates
        table.alter.set_table_properties({k: before.get(k, default) for k, default in _RETENTIONS.items()})
        if carry:
            self.note(name, carry)
        log.warning("purged the history of table '%s' (retention check bypassed): %d files removed, log entries "
                    "before version %d removed", name, len(removed), kept_from)
        return {"files_removed": len(removed), "version": self.version(name)}

    # -- maintenance ---------------------------------------------------------
    def compact(self, name: str) -> dict[str, Any]:
        self._require(name)
        return self.retry.run(lambda _a: self._table(name).optimize.compact(), is_conflict=is_conflict,
                              table=name, what="compact")

    def vacuum(self, name: str, retention_hours: float = 168.0) -> list[str]:
        self._require(name)
        return self.retry.run(
            lambda _a: self._table(name).vacuum(retention_hours=int(retention_hours), dry_run=False,
                                                enforce_retention_duration=False),
            is_conflict=is_conflict, table=name, what="vacuum",
        )


def _done(table: DeltaTable, app_id: str | None, batch_id: int | None) -> CommitResult | None:
    """A skipped result if ``app_id`` already committed ``batch_id`` (or a later one) to ``table``."""
    if app_id is None or batch_id is None:
        return None
    last = table.transaction_version(app_id)
    if last is not None and last >= batch_id:
        return CommitResult(version=table.version(), skipped=True)
    return None
