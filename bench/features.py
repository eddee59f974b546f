"""Full-refresh benchmark: wall time and events/s of `recsys features refresh` at several sizes.

Builds (once) an `events` table per size from bench/work/raw-<N> (made by
bench/ingest.py), then times the refresh in a fresh process on local[2],
sampling the RSS of the process tree. Writes bench/results/features.json.

    python bench/features.py --sizes 1000000 10000000
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, bench_env, run_measured, write_result  # noqa: E402 - sibling helper module


def main() -> None:
    args = base_parser(__doc__.splitlines()[0], "features.json").parse_args()
    recsys = str(Path(sys.executable).with_name("recsys"))
    env = bench_env()
    work = Path(args.work)
    results = []
    for size in args.sizes:
        raw = work / f"raw-{size}"
        if not (raw / "_manifest.json").exists():
            raise SystemExit(f"{raw} is missing: run bench/ingest.py --sizes {size} first")
        home = work / f"features-home-{size}"
        common = ["--set", f"home={home}", "--set", f"spark.master={args.master}"]
        if not (home / "lake" / "events" / "_delta_log").exists():
            shutil.rmtree(home, ignore_errors=True)
            run_measured([recsys, "ingest", "--input", str(raw), *common], env, work / f"features-ingest-{size}.log")
        summary_path = home / "refresh.json"
        wall, peak, _ = run_measured([recsys, "features", "refresh", "--summary-json", str(summary_path), *common],
                                     env, work / f"features-refresh-{size}.log")
        summary = json.loads(summary_path.read_text())
        results.append({
            "events": size, "wall_seconds_process": round(wall, 2), "refresh_seconds_in_job": summary["seconds"],
            "events_per_second_job": round(size / summary["seconds"]),
            "events_per_second_wall": round(size / wall), "peak_rss_mb": round(peak / 2**20),
            "dq_gate_seconds": summary.get("dq_seconds"), "publish_seconds": summary.get("publish_seconds"),
            "tables": summary["tables"],
        })
        print(json.dumps(results[-1]), flush=True)
    growth = None
    if len(results) >= 2:
        a, b = results[0], results[-1]
        growth = round((b["refresh_seconds_in_job"] / a["refresh_seconds_in_job"]) / (b["events"] / a["events"]), 3)
    write_result(args.out, "features_full_refresh", args.master, target_events_per_second_at_largest=300_000,
                 results=results, time_growth_vs_linear=growth)


if __name__ == "__main__":
    main()
