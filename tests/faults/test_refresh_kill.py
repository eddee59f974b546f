"""A full refresh SIGKILLed between its table overwrites: readers stay on the last complete refresh.

Real processes and a real SIGKILL (``RECSYS_FAULT_POINT=between_refresh_tables``), then the
readers: ``read_states`` (training, batch recommendations), the online store's full load and
``recsys online verify``. Re-running the refresh completes it and moves every reader on.
"""

from __future__ import annotations

import signal

import pytest

from recsys_lib.core.config import load_config
from recsys_lib.features import entities
from recsys_lib.features.layers import read_states
from recsys_lib.lake import open_lake
from tests.faults.helpers import generate, ok, recsys

pytestmark = [pytest.mark.faults, pytest.mark.spark]


def _counts(lake, entity, fc, version=None):
    df = read_states(lake, entity, fc) if version is None else lake.read(entity.table, version=version)
    columns = [c for c in df.columns if c.endswith("_count")]
    return {tuple(r[k] for k in entity.keys): tuple(r[c] for c in columns) for r in df.collect()}


@pytest.mark.timeout(1200)
def test_sigkill_between_refresh_tables(spark, tmp_path):
    home = tmp_path / "home"
    for n, seed in enumerate((41, 42)):
        raw = generate(tmp_path / f"raw{n}", events=3000, seed=seed)
        ok(recsys(home, "ingest", "--input", str(raw)))
        if n == 0:
            ok(recsys(home, "features", "refresh"))
            cfg = load_config(overrides=[f"home={home}"])
            lake = open_lake(spark, cfg)
            first = {e.table: lake.version(e.table) for e in entities(cfg.features).values()}
    killed = recsys(home, "features", "refresh", fault="between_refresh_tables")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    moved = [t for t, v in first.items() if lake.version(t) != v]
    assert len(moved) == 1  # one table overwritten by the killed refresh, the others not
    half = next(e for e in entities(cfg.features).values() if e.table == moved[0])
    assert _counts(lake, half, cfg.features, lake.version(half.table)) != _counts(
        lake, half, cfg.features, first[half.table])  # it holds the new events: reading it would mix refreshes

    for entity in entities(cfg.features).values():  # every batch reader sees the first refresh
        assert _counts(lake, entity, cfg.features) == _counts(lake, entity, cfg.features, first[entity.table])
    ok(recsys(home, "online", "sync", "--full"))  # the store loads the same, consistent generation
    assert recsys(home, "online", "verify").returncode == 0

    ok(recsys(home, "features", "refresh"))  # re-run: complete, and every reader moves on
    for entity in entities(cfg.features).values():
        latest = lake.version(entity.table)
        assert latest > first[entity.table]
        assert _counts(lake, entity, cfg.features) == _counts(lake, entity, cfg.features, latest)
    assert recsys(home, "online", "verify").returncode == 0
