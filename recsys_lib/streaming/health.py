"""Liveness and freshness of the continuous stream, and restarting it (the watchdog DAG's work).

The running stream writes its driver's pid to ``<checkpoint>/driver.pid``; each
micro-batch appends its report to ``batches.jsonl``. The stream is

* ``dead`` when the pid file names no live process (or there is none);
* ``stale`` when input newer than ``max_lag`` seconds has been waiting in the
  landing folder since after the last batch finished;
* ``healthy`` otherwise (an idle stream with no new input is healthy).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recsys_lib.core.config import RecsysConfig

PID_FILE = "driver.pid"
STATUS_FILE = "batches.jsonl"


def write_pid(cfg: RecsysConfig) -> None:
    """Record this process as the stream's driver."""
    path = Path(cfg.checkpoint_dir) / PID_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{PID_FILE}.tmp")
    tmp.write_text(str(os.getpid()))
    tmp.replace(path)  # atomic: a reader sees the old pid or the new one, never an empty file


def read_pid(path: Path) -> int | None:
    """The pid recorded in ``path``; None if there is none or the file is empty or not a number.

    A driver killed while writing its pid file, or a file an operator emptied, must not
    crash the watchdog: the stream then counts as dead and is restarted.
    """
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _newest_input(landing: Path) -> float | None:
    newest = None
    for path in landing.rglob("*"):
        if path.is_file() and not path.name.startswith((".", "_")):
            mtime = path.stat().st_mtime
            newest = mtime if newest is None or mtime > newest else newest
    return newest


def stream_health(cfg: RecsysConfig, max_lag: float, now: float | None = None) -> dict[str, Any]:
    """Classify the stream (see the module docstring) with the evidence used."""
    now = now or time.time()
    checkpoint = Path(cfg.checkpoint_dir)
    pid_path = checkpoint / PID_FILE
    pid = read_pid(pid_path)
    status_path = checkpoint / STATUS_FILE
    last_batch = status_path.stat().st_mtime if status_path.exists() else None
    newest = _newest_input(Path(cfg.landing_dir)) if Path(cfg.landing_dir).exists() else None
    report = {"pid": pid, "last_batch_at": last_batch, "newest_input_at": newest, "max_lag": max_lag}
    if pid is None or not _alive(pid):
        return report | {"status": "dead", "reason": "no live stream driver" + (f" (pid {pid})" if pid else "")}
    waiting = newest is not None and (last_batch is None or newest > last_batch)
    if waiting and newest is not None and now - newest > max_lag:
        return report | {"status": "stale",
                         "reason": f"input from {now - newest:.0f}s ago is still unprocessed (limit {max_lag:.0f}s)"}
    return report | {"status": "healthy", "reason": "alive and keeping up"}


def restart_stream(cfg: RecsysConfig, args: Sequence[str] = (), grace: float = 30.0) -> int:
    """Stop the recorded driver (SIGTERM, then SIGKILL after ``grace`` s) and start ``recsys stream`` detached.

    Returns:
        The new driver's pid. Its output goes to ``<checkpoint>/stream.log``.

    """
    checkpoint = Path(cfg.checkpoint_dir)
    checkpoint.mkdir(parents=True, exist_ok=True)
    pid_path = checkpoint / PID_FILE
    old = read_pid(pid_path)
    if old is not None and _alive(old):
        os.kill(old, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _alive(old) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _alive(old):
            os.kill(old, signal.SIGKILL)
    with (checkpoint / "stream.log").open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "recsys_lib.cli", "stream", *args], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "RECSYS_HOME": cfg.home_dir})
    return proc.pid
