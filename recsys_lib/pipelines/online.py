"""The online store's jobs: sync, verify and stats (``recsys online ...``).

None of them starts Spark: the store is filled from the Delta tables through
delta-rs and Arrow (:func:`recsys_lib.lake.driver_lake`).
"""

from __future__ import annotations

import time
from typing import Any

from recsys_lib.core.config import RecsysConfig
from recsys_lib.features import online
from recsys_lib.lake import driver_lake
from recsys_lib.online import open_store


def run_sync(cfg: RecsysConfig, *, full: bool = False) -> dict[str, Any]:
    """Catch the online store up with the feature tables (``full``: load a new generation)."""
    started = time.monotonic()
    store = open_store(cfg)
    try:
        report = online.sync(store, driver_lake(cfg), cfg, full=full)
    finally:
        store.close()
    report["seconds"] = round(time.monotonic() - started, 3)
    return report


def run_verify(cfg: RecsysConfig, *, limit: int = 20) -> tuple[int, list[str]]:
    """(rows compared, mismatch lines) between the store and the feature tables."""
    store = open_store(cfg)
    try:
        return online.verify(store, driver_lake(cfg), cfg, limit=limit)
    finally:
        store.close()


def run_stats(cfg: RecsysConfig) -> dict[str, Any]:
    """Rows, bytes, generation and versions of the store, next to the tables' latest versions."""
    lake = driver_lake(cfg)
    store = open_store(cfg)
    try:
        stats = store.stats()
    finally:
        store.close()
    stats["delta_versions"] = {t: lake.version(t) for t in stats.get("applied_versions", {}) if lake.exists(t)}
    return stats
