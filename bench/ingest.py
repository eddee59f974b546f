"""Ingestion benchmark: events/s and peak memory of `recsys ingest` at several sizes.

Generates each data set once (timed separately), then runs ingest in a fresh
process on a fresh lake, sampling the RSS of the whole process tree (driver
JVM + Python). Writes bench/results/ingest.json.

    python bench/ingest.py --sizes 1000000 10000000 [--master local[2]]
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, bench_env, run_measured, write_result  # noqa: E402 - sibling helper module


def main() -> None:
    args = base_parser(__doc__.splitlines()[0], "ingest.json").parse_args()
    recsys = str(Path(sys.executable).with_name("recsys"))
    env = bench_env()
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
    write_result(args.out, "ingest", args.master, target_events_per_second_at_largest=300_000, results=results,
                 time_growth_vs_linear=round(growth, 3) if growth else None)


if __name__ == "__main__":
    main()
