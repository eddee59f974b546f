"""The native engine: delta-spark's ``format("delta")``, used only when its jar is loaded.

Idempotency uses Delta's own ``txnAppId``/``txnVersion`` (writer options for
appends and overwrites, session confs for MERGE). The last committed batch of
an app is read through delta-rs, which reads any Delta table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from deltalake import DeltaTable as RsTable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_lib.lake.base import CommitResult, Lake, LakeConflictError, TableSpec

_TXN_APP = "spark.databricks.delta.write.txnAppId"
_TXN_VERSION = "spark.databricks.delta.write.txnVersion"


def is_conflict(exc: BaseException) -> bool:
    """True for Delta's optimistic-concurrency exceptions."""
    return "ConcurrentModificationException" in str(exc) or type(exc).__name__.startswith("Concurrent")


class NativeDeltaLake(Lake):
    """Delta tables read and written by delta-spark inside the JVM."""

    engine_name = "native"

    def _delta_table(self, name: str) -> Any:
        from delta.tables import DeltaTable

        self._require(name)
        return DeltaTable.forPath(self.spark, self.uri(name))

    def exists(self, name: str) -> bool:
        from delta.tables import DeltaTable

        return bool(DeltaTable.isDeltaTable(self.spark, self.uri(name)))

    def create(self, spec: TableSpec) -> int:
        from delta.tables import DeltaTable

        builder = DeltaTable.createIfNotExists(self.spark).location(self.uri(spec.name)).addColumns(spec.schema)
        if spec.partition_by:
            builder = builder.partitionedBy(*spec.partition_by)
        for key, value in spec.all_properties().items():
            builder = builder.property(key, value)
        builder.execute()
        return self.version(spec.name)

    def version(self, name: str) -> int:
        return int(self._delta_table(name).history(1).select("version").first()[0])

    def txn_version(self, name: str, app_id: str) -> int | None:
        self._require(name)
        return RsTable(self.uri(name), storage_options=self.storage_options or None).transaction_version(app_id)

    def _skip(self, name: str, app_id: str | None, batch_id: int | None) -> CommitResult | None:
        if (app_id is None) != (batch_id is None):
            raise ValueError(f"write to '{name}': give both app_id and batch_id, or neither")
        if app_id is not None and batch_id is not None:
            last = self.txn_version(name, app_id)
            if last is not None and last >= batch_id:
                return CommitResult(version=self.version(name), skipped=True)
        return None

    def _write(self, spec: TableSpec, df: DataFrame, mode: str, app_id: str | None,
               batch_id: int | None, metadata: Mapping[str, Any] | None) -> CommitResult:
        self.create(spec)
        skipped = self._skip(spec.name, app_id, batch_id)
        if skipped:
            return skipped
        before = self.version(spec.name)

        def run(_attempt: int) -> CommitResult:
            writer = df.select(*spec.schema.fieldNames()).write.format("delta").mode(mode)
            if app_id is not None:
                writer = writer.option("txnAppId", app_id).option("txnVersion", batch_id)
            if metadata:
                writer = writer.option("userMetadata", json.dumps(dict(metadata), default=str))
            writer.save(self.uri(spec.name))
            return self._result(spec.name, before)

        return self.retry.run(run, is_conflict=is_conflict, table=spec.name, what=mode)

    def append(self, spec: TableSpec, df: DataFrame, *, app_id: str | None = None,
               batch_id: int | None = None, metadata: Mapping[str, Any] | None = None) -> CommitResult:
        return self._write(spec, df, "append", app_id, batch_id, metadata)

    def overwrite(self, spec: TableSpec, df: DataFrame, *, app_id: str | None = None,
                  batch_id: int | None = None, metadata: Mapping[str, Any] | None = None) -> CommitResult:
        return self._write(spec, df, "overwrite", app_id, batch_id, metadata)

    def merge(self, spec: TableSpec, df: DataFrame, keys: Sequence[str], *,
              update: Mapping[str, str] | None = None, app_id: str | None = None,
              batch_id: int | None = None, metadata: Mapping[str, Any] | None = None,
              read_version: int | None = None) -> CommitResult:
        self.create(spec)
        if read_version is not None and read_version != self.version(spec.name):
            raise LakeConflictError(f"merge on table '{spec.name}' computed from version {read_version}, "
                                    f"but the table is now at {self.version(spec.name)}")
        skipped = self._skip(spec.name, app_id, batch_id)
        if skipped:
            return skipped
        before = self.version(spec.name)
        condition = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        updates = dict(update) if update is not None else {
            c: f"s.`{c}`" for c in spec.schema.fieldNames() if c not in keys
        }

        def run(_attempt: int) -> CommitResult:
            with self._session_txn(app_id, batch_id):
                merger = self._delta_table(spec.name).alias("t").merge(df.alias("s"), condition)
                if updates:
                    merger = merger.whenMatchedUpdate(set=updates)
                merger.whenNotMatchedInsertAll().execute()
            return self._result(spec.name, before)

        return self.retry.run(run, is_conflict=is_conflict, table=spec.name, what="merge")

    def replace_partitions(self, spec: TableSpec, df: DataFrame, column: str, values: Sequence[Any], *,
                           read_version: int, metadata: Mapping[str, Any] | None = None) -> CommitResult:
        if column not in spec.partition_by:
            raise ValueError(f"replace_partitions on '{spec.name}': '{column}' is not a partition column")
        if read_version != self.version(spec.name):
            raise LakeConflictError(f"replacing partitions of '{spec.name}' computed from version {read_version}, "
                                    f"but the table is now at {self.version(spec.name)}")
        listed = ", ".join(_sql_literal(v) for v in values)
        writer = (df.select(*spec.schema.fieldNames()).write.format("delta").mode("overwrite")
                  .option("replaceWhere", f"`{column}` IN ({listed})"))
        if metadata:
            writer = writer.option("userMetadata", json.dumps(dict(metadata), default=str))
        writer.save(self.uri(spec.name))
        return self._result(spec.name, read_version)

    @contextmanager
    def _session_txn(self, app_id: str | None, batch_id: int | None) -> Iterator[None]:
        if app_id is None:
            yield
            return
        self.spark.conf.set(_TXN_APP, app_id)
        self.spark.conf.set(_TXN_VERSION, str(batch_id))
        try:
            yield
        finally:
            self.spark.conf.unset(_TXN_APP)
            self.spark.conf.unset(_TXN_VERSION)

    def _result(self, name: str, before: int) -> CommitResult:
        last = self._delta_table(name).history(1).first()
        version = int(last["version"])
        metrics = last["operationMetrics"] or {}
        rows = int(metrics.get("numOutputRows", 0) or 0)
        files = int(metrics.get("numFiles", metrics.get("numTargetFilesAdded", 0)) or 0)
        return CommitResult(version=version, skipped=version == before, rows=rows, files=files)

    def read(self, name: str, *, version: int | None = None, timestamp: datetime | str | None = None,
             partitions: tuple[str, Sequence[Any]] | None = None) -> DataFrame:
        self._require(name)
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        if timestamp is not None:
            reader = reader.option("timestampAsOf", str(timestamp))
        df = reader.load(self.uri(name))
        return df if partitions is None else df.where(F.col(partitions[0]).isin(list(partitions[1])))

    def history(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        rows = self._delta_table(name).history(limit) if limit else self._delta_table(name).history()
        return [r.asDict(recursive=True) for r in rows.collect()]

    def changes(self, name: str, since_version: int, until_version: int | None = None) -> DataFrame:
        reader = self.spark.read.format("delta").option("readChangeFeed", "true")
        reader = reader.option("startingVersion", since_version)
        if until_version is not None:
            reader = reader.option("endingVersion", until_version)
        return reader.load(self.uri(name)).withColumn("_commit_version", F.col("_commit_version").cast("long"))

    def compact(self, name: str) -> dict[str, Any]:
        result = self.retry.run(lambda _a: self._delta_table(name).optimize().executeCompaction(),
                                is_conflict=is_conflict, table=name, what="compact")
        return {"metrics": [r.asDict(recursive=True) for r in result.collect()]}

    def vacuum(self, name: str, retention_hours: float = 168.0) -> list[str]:
        self.spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
        self.retry.run(lambda _a: self._delta_table(name).vacuum(retention_hours),
                       is_conflict=is_conflict, table=name, what="vacuum")
        return []


def _sql_literal(value: Any) -> str:
    """A partition value as a SQL literal."""
    if isinstance(value, bool | int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"
