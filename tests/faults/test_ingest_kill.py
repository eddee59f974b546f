"""The batch ingest SIGKILLed after each of its commits, then run again: every line is stored exactly once.

Real processes and real SIGKILLs (``RECSYS_FAULT_POINT``). The landing folder holds
bad lines (quarantined), duplicates and one gzip file cut short (quarantined whole).
After the re-run, ``events``, ``events_quarantine`` and ``quarantined_files`` equal one
clean ingest of the same folder.
"""

from __future__ import annotations

import signal

import pytest

from recsys_lib.core.config import load_config
from recsys_lib.lake import open_lake
from tests.faults.helpers import generate, ingest_recomputed, ingested, ok, plant_corrupt_file, recsys

pytestmark = [pytest.mark.faults, pytest.mark.spark]


@pytest.fixture(scope="module")
def landing(tmp_path_factory):
    folder = generate(tmp_path_factory.mktemp("landing") / "raw", events=3000, seed=7)
    plant_corrupt_file(folder)
    return folder


@pytest.fixture(scope="module")
def recomputed(spark, landing, tmp_path_factory):
    expected = ingest_recomputed(spark, tmp_path_factory.mktemp("recomputed"), landing)
    assert expected["events_quarantine"] and len(expected["quarantined_files"]) == 1  # every commit point is real
    return expected


#: The tables complete when the kill comes (the ingest commits them in this order).
COMPLETE_AT = {
    "after_corrupt_files_commit": {"quarantined_files"},
    "between_ingest_commits": {"quarantined_files", "events"},
    "after_ingest_commits": {"quarantined_files", "events", "events_quarantine"},
}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("point", list(COMPLETE_AT))
def test_sigkill_after_each_ingest_commit(spark, tmp_path, landing, recomputed, point):
    home = tmp_path / "home"
    killed = recsys(home, "ingest", "--input", str(landing), fault=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    lake = open_lake(spark, load_config(overrides=[f"home={home}"]))
    partial = ingested(lake)
    assert {t for t, rows in partial.items() if rows == recomputed[t]} == COMPLETE_AT[point]
    rerun = recsys(home, "ingest", "--input", str(landing))  # takes over the killed run's lease at once
    ok(rerun)
    assert ingested(lake) == recomputed
    # Spark's JVM noise is quiet by default (recsys_lib/core/log4j2.properties)
    assert "NativeCodeLoader" not in rerun.stderr and "default log4j profile" not in rerun.stderr, rerun.stderr
