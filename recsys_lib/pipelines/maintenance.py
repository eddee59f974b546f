"""The maintenance job: compact small files and vacuum old ones in every table.

Safe while the stream runs: compaction commits only rewrite files (no data
change), appends never conflict with it, and a feature merge that does conflict
is recomputed by the stream (see :mod:`recsys_lib.streaming.microbatch`).
Conflicts of the maintenance commits themselves are retried with backoff by the lake.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from recsys_lib.lake import Lake


def lake_tables(lake: Lake) -> list[str]:
    """Names of the Delta tables under the lake root (local lakes)."""
    root = Path(lake.root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "_delta_log").is_dir())


def run_maintenance(lake: Lake, tables: list[str] | None = None, *, retention_hours: float = 168.0,
                    vacuum: bool = True) -> dict[str, dict[str, Any]]:
    """Compact, then vacuum, each table; return what was done per table."""
    report: dict[str, dict[str, Any]] = {}
    for name in tables or lake_tables(lake):
        t0 = time.monotonic()
        metrics = lake.compact(name)
        removed = lake.vacuum(name, retention_hours) if vacuum else []
        report[name] = {"files_added": metrics.get("numFilesAdded"), "files_removed": metrics.get("numFilesRemoved"),
                        "vacuumed": len(removed), "version": lake.version(name),
                        "seconds": round(time.monotonic() - t0, 2)}
    return report
