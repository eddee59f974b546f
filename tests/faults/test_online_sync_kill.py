"""The online sync SIGKILLed at each of its commit points, then run again: the store equals Delta.

Real processes and real SIGKILLs. A full load (a new generation) is killed between two tables,
and its re-run just before the switch: readers keep the previous generation, whole. An incremental
catch-up is killed after writing rows but before recording the version they bring the store
to: the re-run writes them again. After each re-run ``recsys online verify`` compares every
stored row with the Delta tables and finds no difference.
"""

from __future__ import annotations

import signal

import pytest

from recsys_lib.core.config import load_config
from recsys_lib.online import open_store
from tests.faults.helpers import generate, ok, recsys

pytestmark = [pytest.mark.faults, pytest.mark.spark]
OFFLINE = ("--set", "online.enabled=false")  # Delta moves on; the store is left for the sync under test


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    base = tmp_path_factory.mktemp("raw")
    return [generate(base / f"raw{n}", events=2000, seed=20 + n) for n in range(2)]


def _generation(home):
    store = open_store(load_config(overrides=[f"home={home}"]))
    try:
        return store.generation()
    finally:
        store.close()


@pytest.mark.timeout(900)
def test_sigkill_during_a_full_load_keeps_the_previous_generation(tmp_path, raw):
    home = tmp_path / "home"
    ok(recsys(home, "ingest", "--input", str(raw[0])))
    ok(recsys(home, "features", "refresh"))  # publishes the first generation
    before = _generation(home)
    assert recsys(home, "online", "verify").returncode == 0
    ok(recsys(home, "ingest", "--input", str(raw[1])))
    ok(recsys(home, "features", "refresh", extra=OFFLINE))
    stale = recsys(home, "online", "verify")
    assert stale.returncode == 3 and "the store is at version" in stale.stdout  # 3: the verify gate said no

    # the refresh overwrote the tables: a full load, killed between two tables, then (re-run) before the switch
    for point in ("online_between_tables", "online_before_switch"):
        killed = recsys(home, "online", "sync", fault=point)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
        assert _generation(home) == before, point  # readers never saw a half-loaded generation
    ok(recsys(home, "online", "sync"))
    assert _generation(home) != before
    verified = recsys(home, "online", "verify")
    assert verified.returncode == 0, verified.stdout[-3000:]


@pytest.mark.timeout(900)
def test_sigkill_before_a_catch_up_records_its_version(tmp_path, raw):
    home = tmp_path / "home"
    ok(recsys(home, "ingest", "--input", str(raw[0])))
    ok(recsys(home, "features", "refresh"))
    ok(recsys(home, "stream", "--input", str(raw[1]), "--available-now", extra=OFFLINE))  # merges, not overwrites
    killed = recsys(home, "online", "sync", fault="online_before_applied")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    stale = recsys(home, "online", "verify")
    assert stale.returncode == 3 and "the store is at version" in stale.stdout  # rows written, version not
    synced = ok(recsys(home, "online", "sync"))
    assert '"from_version"' in synced  # caught up incrementally, not reloaded
    verified = recsys(home, "online", "verify")
    assert verified.returncode == 0, verified.stdout[-3000:]
