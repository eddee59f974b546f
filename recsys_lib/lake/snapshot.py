"""Spark-free view of a Delta snapshot: its Parquet files, partition values and row counts.

The TensorFlow input pipeline reads training data through pyarrow from exactly
the files of one Delta version, so a model is tied to a table version and never
sees a half-written overwrite.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from recsys_lib.lake.errors import TableNotFound


@dataclass(frozen=True)
class SnapshotFile:
    """One data file of a snapshot."""

    uri: str
    partition: dict[str, str | None]
    rows: int


@dataclass(frozen=True)
class Snapshot:
    """The files of one table version."""

    uri: str
    version: int
    files: tuple[SnapshotFile, ...]

    @property
    def rows(self) -> int:
        """Rows in the snapshot (from the add actions' stats)."""
        return sum(f.rows for f in self.files)


def snapshot(uri: str, version: int | None = None, storage_options: Mapping[str, str] | None = None) -> Snapshot:
    """List the data files of ``uri`` at ``version`` (default: latest).

    Raises:
        TableNotFound: If there is no Delta table at ``uri``.

    """
    try:
        table = DeltaTable(uri, version=version, storage_options=dict(storage_options or {}) or None)
    except TableNotFoundError:
        raise TableNotFound(f"Delta table does not exist at {uri}") from None
    partition_by = list(table.metadata().partition_columns)
    actions = pa.table(table.get_add_actions(flatten=True))
    paths = actions.column("path").to_pylist()
    rows = actions.column("num_records").to_pylist() if "num_records" in actions.column_names else [0] * len(paths)
    parts = {c: actions.column(f"partition.{c}").to_pylist() for c in partition_by}
    root = table.table_uri.rstrip("/")
    files = tuple(
        SnapshotFile(uri=p if "://" in p else f"{root}/{p}",
                     partition={c: None if parts[c][i] is None else str(parts[c][i]) for c in partition_by},
                     rows=int(rows[i] or 0))
        for i, p in enumerate(paths))
    return Snapshot(uri=root, version=table.version(), files=files)
