"""A full disk under the lake: the failing job says so, commits nothing half, and a re-run completes it.

The lake lives on a small tmpfs (mounted by the test: root on Linux), filled to a few KiB
before the ingest and the refresh that must fail. Each ends by comparing every table
with a recomputation.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from recsys_lib.core.config import load_config
from recsys_lib.features import entities
from recsys_lib.features.layers import read_states
from recsys_lib.lake import open_lake
from tests.faults.helpers import (
    assert_features_match_recomputation,
    generate,
    ingest_recomputed,
    ingested,
    ok,
    recsys,
)

pytestmark = [pytest.mark.faults, pytest.mark.spark]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill up ({done.stderr.strip() or done.returncode}): needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave: int = 16 * 1024) -> Path:
    """A file that takes all but ``leave`` bytes of the disk."""
    filler = disk / "filler"
    stat = os.statvfs(disk)
    with filler.open("wb") as fh:
        fh.truncate(0)
        fh.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave))
    return filler


def _states(lake, cfg):
    return {e.table: sorted(map(str, read_states(lake, e, cfg.features).collect()))
            for e in entities(cfg.features).values()}


@pytest.mark.timeout(900)
def test_a_full_disk_fails_the_job_cleanly_and_a_rerun_completes_it(spark, tmp_path, small_disk):
    raw = [generate(tmp_path / f"raw{n}", events=2000, seed=30 + n) for n in range(2)]
    home = small_disk / "home"
    ok(recsys(home, "ingest", "--input", str(raw[0])))
    ok(recsys(home, "features", "refresh"))
    cfg = load_config(overrides=[f"home={home}"])
    lake = open_lake(spark, cfg)
    before, states = ingested(lake), _states(lake, cfg)

    filler = _fill(small_disk)
    failed = recsys(home, "ingest", "--input", str(raw[1]))
    assert failed.returncode == 1 and "No space left on device" in failed.stderr, failed.stderr[-3000:]
    assert ingested(open_lake(spark, cfg)) == before  # nothing of the failed run was committed
    filler.unlink()
    ok(recsys(home, "ingest", "--input", str(raw[1])))
    assert ingested(lake) == ingest_recomputed(spark, tmp_path, *raw)

    filler = _fill(small_disk)
    failed = recsys(home, "features", "refresh")
    assert failed.returncode == 1 and "No space left on device" in failed.stderr, failed.stderr[-3000:]
    assert _states(open_lake(spark, cfg), cfg) == states  # readers stay on the last complete refresh
    filler.unlink()
    ok(recsys(home, "features", "refresh"))
    assert_features_match_recomputation(spark, lake, cfg, tmp_path / "refreshed")
