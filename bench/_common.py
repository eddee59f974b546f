"""Shared pieces of the benchmarks: measuring a process tree and common arguments."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def base_parser(description: str, result_name: str, *, sizes: bool = True) -> argparse.ArgumentParser:
    """Arguments every benchmark takes: master, work folder and result file (and sizes, unless ``sizes=False``)."""
    parser = argparse.ArgumentParser(description=description)
    if sizes:
        parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--work", default=str(ROOT / "bench" / "work"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / result_name))
    return parser


def write_result(path: str, benchmark: str, master: str, **fields: object) -> None:
    """Write a benchmark's JSON result (name, master, this machine's cores and Python, then ``fields``)."""
    out = {"benchmark": benchmark, "master": master, "cpus": os.cpu_count(), "python": platform.python_version(),
           **fields}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


def bench_env() -> dict[str, str]:
    """The environment benchmark subprocesses run with."""
    return {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_measured(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, int, str]:
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            peak = max(peak, tree_rss(ps))
        except psutil.Error:
            pass
        time.sleep(0.25)
    reader.join()
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(output))
    if proc.returncode != 0:
        errors = [line for line in output if "error" in line.lower() and not line.startswith("\tat ")]
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\nfull log: {log}\n"
                         + "".join(errors[-20:]))
    return time.monotonic() - start, peak, "".join(output)


def view_lines(prefix: str, count: int, first_user: str | None = None) -> list[str]:
    """``count`` JSON lines of view events stamped now (ids ``<prefix>-<i>``; ``first_user`` for the first)."""
    now_ms = int(time.time() * 1000)
    return [json.dumps({"event_id": f"{prefix}-{i}", "event_ts": now_ms,
                        "user_id": first_user if i == 0 and first_user else f"u{i % 500}", "event_type": "view",
                        "item_id": f"i{i % 300}", "category_id": f"c{i % 10}"}) for i in range(count)]
