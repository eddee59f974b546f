"""The watchdog's classification of the stream: dead, stale or healthy."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from recsys_lib.core.config import load_config
from recsys_lib.streaming.health import PID_FILE, STATUS_FILE, stream_health

pytestmark = pytest.mark.unit


@pytest.fixture
def cfg(tmp_path):
    return load_config(overrides=[f"home={tmp_path}"])


def _touch(path, mtime):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    os.utime(path, (mtime, mtime))


def test_no_pid_file_is_dead(cfg):
    assert stream_health(cfg, 60)["status"] == "dead"


def test_pid_of_an_exited_process_is_dead(cfg, tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    _touch(tmp_path / "checkpoints" / "features" / PID_FILE, time.time())
    (tmp_path / "checkpoints" / "features" / PID_FILE).write_text(proc.stdout.strip())
    report = stream_health(cfg, 60)
    assert report["status"] == "dead" and report["pid"] == int(proc.stdout)


def test_live_driver_with_old_unprocessed_input_is_stale_and_otherwise_healthy(cfg, tmp_path):
    now = time.time()
    checkpoint = tmp_path / "checkpoints" / "features"
    _touch(checkpoint / PID_FILE, now)
    (checkpoint / PID_FILE).write_text(str(os.getpid()))  # this test process: alive
    _touch(checkpoint / STATUS_FILE, now - 600)           # last batch 10 min ago
    _touch(tmp_path / "landing" / "date=2024-01-01" / "a.jsonl", now - 300)  # input 5 min ago, after that batch
    assert stream_health(cfg, 120, now=now)["status"] == "stale"
    assert stream_health(cfg, 900, now=now)["status"] == "healthy"   # within the allowed lag
    _touch(checkpoint / STATUS_FILE, now - 60)            # a batch ran after the input arrived
    assert stream_health(cfg, 120, now=now)["status"] == "healthy"


@pytest.mark.parametrize("content", ["", "  \n", "12ab"], ids=["empty", "blank", "not-a-number"])
def test_an_unreadable_pid_file_counts_as_dead(cfg, tmp_path, content):
    _touch(tmp_path / "checkpoints" / "features" / PID_FILE, time.time())
    (tmp_path / "checkpoints" / "features" / PID_FILE).write_text(content)
    report = stream_health(cfg, 60)
    assert (report["status"], report["pid"]) == ("dead", None)


def test_a_half_written_status_line_is_skipped(cfg, tmp_path, caplog):
    from recsys_lib.streaming.job import last_batches

    status = tmp_path / "checkpoints" / "features" / STATUS_FILE
    status.parent.mkdir(parents=True)
    status.write_text('{"batch_id": 0}\n{"batch_id": 1}\n{"batch_id": 2, "rows_in"')  # killed mid-write
    assert [b["batch_id"] for b in last_batches(cfg)] == [0, 1]
    assert [b["batch_id"] for b in last_batches(cfg, limit=1)] == [1]
    assert "line 3 is not complete JSON" in caplog.text
