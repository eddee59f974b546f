"""Parquet files written into a table folder but not yet committed to its Delta log."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from deltalake.transaction import AddAction

from recsys_lib.lake.base import CommitResult
from recsys_lib.lake.files import add_action_fields, filesystem_for, list_parquet


@dataclass(frozen=True)
class Staged:
    """Files written below ``folder`` of a table, with their add actions, not yet committed."""

    fs: Any
    folder: str
    adds: list[AddAction]
    rows: int

    def discard(self) -> None:
        """Delete the uncommitted files (they are invisible to readers either way)."""
        try:
            self.fs.delete_dir(self.folder)
        except OSError:
            pass  # orphans are invisible to readers and removed by vacuum

    def commit_or_discard(self, commit: Callable[[], CommitResult]) -> CommitResult:
        """Run ``commit``; discard the files if it fails or commits nothing."""
        try:
            result = commit()
        except BaseException:
            self.discard()
            raise
        if result.skipped:
            self.discard()
        return result


def write_folder() -> str:
    """A fresh folder name for one write (files stay invisible until committed)."""
    return f"w{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"


def staged(table_uri: str, folder: str, partition_by: Sequence[str]) -> Staged:
    """The files below ``folder`` of a table with add actions (statistics from the footers); empty ones deleted."""
    fs, table_path = filesystem_for(table_uri)
    write_dir = f"{table_path}/{folder}"
    adds = []
    for info in list_parquet(fs, write_dir):
        fields = add_action_fields(fs, table_path, info, partition_by)
        if fields is None:
            fs.delete_file(info.path)
        else:
            adds.append(AddAction(**fields))
    return Staged(fs, write_dir, adds, sum(json.loads(a.stats)["numRecords"] for a in adds))
