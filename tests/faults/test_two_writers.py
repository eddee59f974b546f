"""Two writers at once: two batch ingests of overlapping folders, and two streams on one checkpoint.

Real processes. The writer lease (recsys_lib.lake.lease) makes the second ingest wait for
the first; the second stream on a checkpoint exits at once, naming the first. Each
scenario ends by comparing every table with a recomputation.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest

from recsys_lib.core.config import load_config
from recsys_lib.lake import open_lake
from tests.faults.helpers import (
    assert_features_match_recomputation,
    generate,
    ingest_recomputed,
    ingested,
    ok,
    recsys,
    start,
)

pytestmark = [pytest.mark.faults, pytest.mark.spark]


@pytest.fixture(scope="module")
def three_days(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("raw") / "raw", events=3000, seed=11, days=3)


def _copy_days(raw: Path, out: Path, days: list[int]) -> Path:
    folders = sorted(raw.glob("date=*"))
    for n in days:
        shutil.copytree(folders[n], out / folders[n].name)
    return out


def _wait_for(what: str, check, *, seconds: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n" + "\n".join(
            p.read_text()[-2000:] for p in logs)
        time.sleep(0.5)


@pytest.mark.timeout(900)
def test_two_ingests_of_overlapping_folders_store_each_event_once(spark, tmp_path, three_days):
    home = tmp_path / "home"
    first = _copy_days(three_days, tmp_path / "first", [0, 1])
    second = _copy_days(three_days, tmp_path / "second", [1, 2])  # day 1 in both
    cfg = load_config(overrides=[f"home={home}"])
    lake = open_lake(spark, cfg)
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    # Both start while a third party holds the lease, so both are made to wait (whatever their start-up
    # times); released, one ingests while the other keeps waiting for it.
    held = lake.writing(["events"], "the test", wait=0)
    procs = [start(home, "ingest", "--input", str(folder), log=log) for folder, log in zip((first, second), logs,
                                                                                         strict=True)]
    try:
        _wait_for("both ingests to wait for the lease",
                  lambda: all("waiting for the lease on 'events', held by 'the test'" in p.read_text() for p in logs),
                  seconds=300, logs=logs)
        held.release()
        for proc, log in zip(procs, logs, strict=True):
            assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        held.release()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert ingested(lake) == ingest_recomputed(spark, tmp_path, first, second)
    assert lake.leases.holder("events") is None  # given back


@pytest.mark.timeout(900)
def test_a_second_stream_on_a_checkpoint_exits_naming_the_first(spark, tmp_path, three_days):
    home, landing = tmp_path / "home", tmp_path / "landing"
    _copy_days(three_days, landing, [0])
    cfg = load_config(overrides=[f"home={home}"])
    lake = open_lake(spark, cfg)
    log = tmp_path / "stream.log"
    stream = start(home, "stream", "--input", str(landing), "--trigger", "0.5s", log=log)
    try:
        _wait_for("the first stream's first batch", lambda: lake.exists("events"), seconds=300, logs=[log])
        second = recsys(home, "stream", "--input", str(landing), "--trigger", "0.5s")
        assert second.returncode == 1
        assert "stream features (checkpoint" in second.stderr and "is held by 'stream features" in second.stderr
        for n in (1, 2):  # more data arrives, renamed into place as producers must
            tmp = tmp_path / f".day{n}"
            _copy_days(three_days, tmp, [n])
            day = next(tmp.iterdir())
            day.rename(landing / day.name)
        expected = ingest_recomputed(spark, tmp_path, landing)
        _wait_for("the first stream to ingest every file", lambda: ingested(lake) == expected, seconds=300,
                  logs=[log])
        assert stream.poll() is None  # the first stream ran on undisturbed
    finally:
        stream.send_signal(signal.SIGKILL)  # perhaps mid-batch: its lease frees at once, the batch is redone
        stream.wait(timeout=60)
    ok(recsys(home, "stream", "--input", str(landing), "--available-now"))
    assert ingested(lake) == expected
    assert_features_match_recomputation(spark, lake, cfg, tmp_path / "refreshed")
