"""Ingestion benchmark: events/s and peak memory of `recsys ingest` at several sizes.

Generates each data set once (timed separately), then runs ingest in a fresh
process on a fresh lake, sampling the RSS of the whole process tree (driver
JVM + Python). Writes bench/results/ingest.json.

    python bench/ingest.py --sizes 1000000 10000000 [--master local[2]]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--work", default=str(ROOT / "bench" / "work"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ingest.json"))
    args = parser.parse_args()
    recsys = str(Path(sys.executable).with_name("recsys"))
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    results = []
    for size in args.sizes:
        raw = Path(args.work) / f"raw-{size}"
        manifest = raw / "_manifest.json"
        gen_s = None
        if not manifest.exists():
            shutil.rmtree(raw, ignore_errors=True)
            gen_s, _, _ = run_measured([recsys, "generate", "--out", str(raw), "--events", str(size),
                                        "--users", str(max(2000, size // 200)), "--items",
                                        str(max(1000, size // 1000)), "--days", "30", "--seed", "1"], env,
                                       Path(args.work) / f"generate-{size}.log")
        home = Path(args.work) / f"home-{size}"
        shutil.rmtree(home, ignore_errors=True)
        summary_path = home / "summary.json"
        wall, peak, _ = run_measured([recsys, "ingest", "--input", str(raw), "--summary-json", str(summary_path),
                                      "--set", f"home={home}", "--set", f"spark.master={args.master}"], env,
                                     Path(args.work) / f"ingest-{size}.log")
        summary = json.loads(summary_path.read_text())
        lines = summary["input_records"]
        results.append({
            "valid_events": size, "input_lines": lines, "generate_seconds": gen_s,
            "wall_seconds_process": round(wall, 2), "ingest_seconds_in_job": summary["seconds"],
            "events_per_second_wall": round(lines / wall), "events_per_second_job": round(lines / summary["seconds"]),
            "peak_rss_mb": round(peak / 2**20), "balanced": summary["balanced"],
            "stage_seconds": summary.get("stage_seconds"),
            "valid": summary["valid"], "quarantined": summary["quarantined"], "duplicates": summary["duplicates"],
        })
        print(json.dumps(results[-1]), flush=True)
        shutil.rmtree(home, ignore_errors=True)
    if len(results) >= 2:
        a, b = results[0], results[-1]
        growth = (b["ingest_seconds_in_job"] / a["ingest_seconds_in_job"]) / (b["input_lines"] / a["input_lines"])
    else:
        growth = None
    out = {
        "benchmark": "ingest", "master": args.master, "cpus": os.cpu_count(), "python": platform.python_version(),
        "target_events_per_second_at_largest": 300_000, "results": results,
        "time_growth_vs_linear": round(growth, 3) if growth else None,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
