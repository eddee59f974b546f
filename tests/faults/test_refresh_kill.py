"""A full refresh SIGKILLed between its table overwrites: readers stay on the last complete refresh.

Real processes and a real SIGKILL (``RECSYS_FAULT_POINT=between_refresh_tables``), then the
readers: ``read_states`` (training, batch recommendations), the online store's full load and
``recsys online verify``. Re-running the refresh completes it and moves every reader on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_lib.core.config import load_config
from recsys_lib.features import entities
from recsys_lib.features.layers import read_states
from recsys_lib.lake import open_lake

pytestmark = [pytest.mark.faults, pytest.mark.spark]
RECSYS = str(Path(sys.executable).with_name("recsys"))


def _recsys(home: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("RECSYS_FAULT_POINT", None)
    if fault:
        env["RECSYS_FAULT_POINT"] = fault
    return subprocess.run([RECSYS, *args, "--set", f"home={home}", "--set", "spark.master=local[2]",
                           "--set", "spark.driver_memory=1g"], env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _counts(lake, entity, fc, version=None):
    df = read_states(lake, entity, fc) if version is None else lake.read(entity.table, version=version)
    columns = [c for c in df.columns if c.endswith("_count")]
    return {tuple(r[k] for k in entity.keys): tuple(r[c] for c in columns) for r in df.collect()}


@pytest.mark.timeout(1200)
def test_sigkill_between_refresh_tables(spark, tmp_path):
    home = tmp_path / "home"
    for n, seed in enumerate((41, 42)):
        raw = tmp_path / f"raw{n}"
        subprocess.run([RECSYS, "generate", "--out", str(raw), "--events", "3000", "--users", "60", "--items", "40",
                        "--days", "2", "--seed", str(seed)], check=True, capture_output=True, timeout=300)
        _ok(_recsys(home, "ingest", "--input", str(raw)))
        if n == 0:
            _ok(_recsys(home, "features", "refresh"))
            cfg = load_config(overrides=[f"home={home}"])
            lake = open_lake(spark, cfg)
            first = {e.table: lake.version(e.table) for e in entities(cfg.features).values()}
    killed = _recsys(home, "features", "refresh", fault="between_refresh_tables")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    moved = [t for t, v in first.items() if lake.version(t) != v]
    assert len(moved) == 1  # one table overwritten by the killed refresh, the others not
    half = next(e for e in entities(cfg.features).values() if e.table == moved[0])
    assert _counts(lake, half, cfg.features, lake.version(half.table)) != _counts(
        lake, half, cfg.features, first[half.table])  # it holds the new events: reading it would mix refreshes

    for entity in entities(cfg.features).values():  # every batch reader sees the first refresh
        assert _counts(lake, entity, cfg.features) == _counts(lake, entity, cfg.features, first[entity.table])
    _ok(_recsys(home, "online", "sync", "--full"))  # the store loads the same, consistent generation
    assert _recsys(home, "online", "verify").returncode == 0

    _ok(_recsys(home, "features", "refresh"))  # re-run: complete, and every reader moves on
    for entity in entities(cfg.features).values():
        latest = lake.version(entity.table)
        assert latest > first[entity.table]
        assert _counts(lake, entity, cfg.features) == _counts(lake, entity, cfg.features, latest)
    assert _recsys(home, "online", "verify").returncode == 0
