"""The maintenance job: fold feature tables' pending layers, compact small files and vacuum old ones.

Safe while the stream runs: compaction commits only rewrite files (no data
change), appends never conflict with it, and a feature merge that does conflict
is recomputed by the stream (see :mod:`recsys_lib.streaming.microbatch`).
Conflicts of the maintenance commits themselves are retried with backoff by the lake.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from recsys_lib.core.config import RecsysConfig
from recsys_lib.features.definitions import Entity, entities
from recsys_lib.features.layers import compact_pending
from recsys_lib.features.publish import publish_all
from recsys_lib.lake import Lake, LakeConflictError, LeaseHeld


class UnsafeVacuum(ValueError):
    """A vacuum retention shorter than the files a reader or the stream may still need."""


def vacuum_retention(cfg: RecsysConfig, hours: float | None = None, *, force: bool = False) -> float:
    """The retention (hours) to vacuum with: ``hours``, or by default the safe minimum.

    The minimum is ``lake.longest_reader`` plus ``streaming.trigger``, rounded up to the
    hour: a vacuum deletes the files of older versions, and a reader still on one of them
    (or the stream between reading a version and committing on top of it) would fail, or
    a time-travel query would find the version gone.

    Raises:
        UnsafeVacuum: If ``hours`` is below the minimum and ``force`` is not given.

    """
    minimum = math.ceil((cfg.lake.longest_reader + cfg.streaming.trigger) / 3600)
    if hours is None:
        return float(minimum)
    if hours < minimum and not force:
        raise UnsafeVacuum(
            f"a retention of {hours:g} hours is shorter than the {minimum} hours readers may still need "
            f"(lake.longest_reader {cfg.lake.longest_reader / 3600:g} h + streaming.trigger "
            f"{cfg.streaming.trigger:g} s): files of versions a training job, a time-travel query or the "
            "stream may still read would be deleted. Use --force to vacuum anyway, or lower lake.longest_reader")
    return hours


def lake_tables(lake: Lake) -> list[str]:
    """Names of the Delta tables under the lake root (local lakes)."""
    root = Path(lake.root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "_delta_log").is_dir())


def run_maintenance(lake: Lake, tables: list[str] | None = None, *, retention_hours: float = 168.0,
                    vacuum: bool = True, cfg: RecsysConfig | None = None) -> dict[str, dict[str, Any]]:
    """Compact, then vacuum, each table; return what was done per table.

    With ``cfg``, a feature table's pending layer is first merged into its base
    (:func:`recsys_lib.features.layers.compact_pending`), holding the table's writer lease;
    if the stream commits meanwhile, or holds the lease past ``lake.lease_wait``, that step is
    left for the next run. Then its published copy is brought up to date
    (:mod:`recsys_lib.features.publish`), compacted and vacuumed too (as ``published/<table>``).
    """
    report: dict[str, dict[str, Any]] = {}
    features = cfg.features if cfg is not None else None
    feature_tables = {e.table: e for e in entities(features).values()} if features else {}
    for name in tables or lake_tables(lake):
        t0 = time.monotonic()
        pending: Any = None
        publish_report: dict[str, Any] = {}
        entity = feature_tables.get(name)
        if entity is not None and features is not None:
            try:  # a data commit: under the table's writer lease (the stream's batches wait, or it waits)
                with lake.writing([name], f"maintain {name}"):
                    pending = compact_pending(lake, entity, features).get("compacted")
            except LakeConflictError:
                pending = "conflict: left for the next run"
            except LeaseHeld as exc:
                pending = f"left for the next run: {exc}"
        metrics = lake.compact(name)
        if entity is not None and cfg is not None:  # before the vacuum: it reads the change feed since the last one
            publish_report = publish_all(lake, cfg, [entity])[entity.table]
        removed = lake.vacuum(name, retention_hours) if vacuum else []
        report[name] = {"pending_folded": pending, "files_added": metrics.get("numFilesAdded"),
                        "files_removed": metrics.get("numFilesRemoved"), "vacuumed": len(removed),
                        "version": lake.version(name), "seconds": round(time.monotonic() - t0, 2)}
        if entity is not None and cfg is not None:
            report[f"published/{name}"] = _maintain_published(lake, cfg, entity, publish_report,
                                                                  retention_hours, vacuum)
    return report


def _maintain_published(lake: Lake, cfg: RecsysConfig, entity: Entity, done: dict[str, Any],
                        retention_hours: float, vacuum: bool) -> dict[str, Any]:
    """Compact and vacuum the published copy of ``entity``'s table (``done``: what its publish did)."""
    from recsys_lib.lake import published_lake

    t0 = time.monotonic()
    published = published_lake(lake.spark, cfg)
    if not published.exists(entity.table):
        return {"pending_folded": None, "files_added": 0, "files_removed": 0, "vacuumed": 0, "version": None,
                "published": done, "seconds": round(time.monotonic() - t0, 2)}
    metrics = published.compact(entity.table)
    removed = published.vacuum(entity.table, retention_hours) if vacuum else []
    return {"pending_folded": None, "files_added": metrics.get("numFilesAdded"),
            "files_removed": metrics.get("numFilesRemoved"), "vacuumed": len(removed),
            "version": published.version(entity.table), "published": done,
            "seconds": round(time.monotonic() - t0, 2)}
