"""Reading a Delta log directly: add actions by partition, and the files a range of commits appended."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc

from recsys_lib.lake.files import filesystem_for


def logged_rows(actions: pa.Table) -> tuple[int, bool]:
    """Rows of a table version from its add actions' statistics (flattened), no data read.

    Returns the sum of the known counts, and whether every file had one.
    """
    if "num_records" not in actions.column_names:
        return 0, not actions.num_rows
    counts = actions.column("num_records")
    return int(pc.sum(counts).as_py() or 0), counts.null_count == 0


def files_in(actions: pa.Table, column: str, values: Sequence[Any]) -> pa.Table:
    """The add actions (flattened) whose partition ``column`` is one of ``values`` (compared as text)."""
    if not actions.num_rows:
        return actions
    wanted = {str(v) for v in values}
    keep = [str(v) in wanted for v in actions.column(f"partition.{column}").to_pylist()]
    return actions.filter(pa.array(keep, pa.bool_()))


def appended_files(table_uri: str, since_version: int, until_version: int,
                   partition_by: Sequence[str]) -> pa.Table | None:
    """The files added by commits ``since_version``..``until_version`` if those commits only appended data.

    Columns ``path``, ``num_records`` (null where a file has no statistics) and
    ``partition.<column>``. Read from the commit files in ``_delta_log``. None (use
    the change feed) when a commit in the range removed data, wrote change-data
    files, or changed the schema or protocol after the table's creation, or when a
    commit file is gone (log cleanup).
    """
    fs, root = filesystem_for(table_uri.rstrip("/"))
    paths: list[str] = []
    records: list[int | None] = []
    values: dict[str, list[str | None]] = {c: [] for c in partition_by}
    for version in range(since_version, until_version + 1):
        try:
            with fs.open_input_stream(f"{root}/_delta_log/{version:020d}.json") as handle:
                lines = handle.read().decode("utf-8").splitlines()
        except OSError:  # not found (the log was cleaned up) or unreadable: the change feed decides
            return None
        for line in filter(None, lines):
            action = json.loads(line)
            if "add" in action:
                add = action["add"]
                if add.get("dataChange", True):  # dataChange false: a compaction's rewrite of rows already there
                    paths.append(unquote(add["path"]))
                    records.append(json.loads(add.get("stats") or "{}").get("numRecords"))
                    for column in partition_by:
                        values[column].append(add.get("partitionValues", {}).get(column))
            elif _changes_more_than_appends(action, version):
                return None
    return pa.table({"path": pa.array(paths, pa.string()), "num_records": pa.array(records, pa.int64()),
                     **{f"partition.{c}": pa.array(v, pa.string()) for c, v in values.items()}})


def _changes_more_than_appends(action: dict[str, Any], version: int) -> bool:
    """A removal of data, change-data files, or a schema or protocol change after creation."""
    removes = "remove" in action and action["remove"].get("dataChange", True)
    return bool(removes or "cdc" in action or (("metaData" in action or "protocol" in action) and version > 0))


def partition_text(value: Any) -> str | None:
    """A partition value as the Delta log stores it."""
    return None if value is None else str(value)


def unreadable_commit(table_uri: str) -> tuple[str, int, str] | None:
    """The first commit file in ``_delta_log`` that is not JSON lines: (path, version, why), or None.

    Used to name the culprit when delta-rs cannot load a table (its own error names neither).
    """
    from pyarrow import fs as pafs

    fs, root = filesystem_for(table_uri.rstrip("/"))
    infos = fs.get_file_info(pafs.FileSelector(f"{root}/_delta_log", allow_not_found=True))
    commits = sorted((i.path for i in infos if i.base_name.endswith(".json") and i.base_name[:-5].isdigit()),
                     key=lambda p: int(p.rsplit("/", 1)[-1][:-5]))
    for path in commits:
        version = int(path.rsplit("/", 1)[-1][:-5])
        with fs.open_input_stream(path) as handle:
            data = handle.read()
        try:
            lines = data.decode("utf-8").splitlines()
        except UnicodeDecodeError as exc:
            return path, version, f"not UTF-8: {exc}"
        for number, line in enumerate(lines, 1):
            try:
                if line.strip():
                    json.loads(line)
            except json.JSONDecodeError as exc:
                return path, version, f"line {number}: {exc}"
    return None

