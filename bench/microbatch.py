"""Where a steady micro-batch spends its time; writes bench/results/microbatch.json.

Calls the stream's own ``process_batch`` in-process (no Structured Streaming
trigger or file listing) on files of ``--rate`` view events, the shape
bench/streaming.py's freshness feeder drops. The first ``--warmup`` batches build
the tables and warm the JVM; each later batch reports its wall seconds, the
ingest stages, the feature merges and how many Spark jobs it ran.

    python bench/microbatch.py --batches 8 --warmup 2 --rate 2000
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, view_lines  # noqa: E402 - sibling helper module


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], "microbatch.json", sizes=False)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rate", type=int, default=2000)
    args = parser.parse_args()

    from recsys_lib.core.config import load_config
    from recsys_lib.ingest.local_dedup import StoredKeys
    from recsys_lib.ingest.validate import read_raw
    from recsys_lib.pipelines.context import start
    from recsys_lib.streaming.microbatch import process_batch

    work = Path(args.work)
    home, inbox = work / "microbatch-home", work / "microbatch-in"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(inbox, ignore_errors=True)
    ctx = start(load_config(overrides=[f"home={home}", f"spark.master={args.master}"]))
    tracker = ctx.spark.sparkContext.statusTracker()
    measured = []
    stored = StoredKeys(ctx.lake)  # kept between batches, as the stream keeps it
    for n in range(args.warmup + args.batches):
        folder = inbox / f"b{n:04d}"
        folder.mkdir(parents=True)
        (folder / "events.jsonl").write_text("\n".join(view_lines(f"m{n}", args.rate)) + "\n")
        jobs_before = len(tracker.getJobIdsForGroup(None))
        started = time.monotonic()
        report = process_batch(ctx.spark, ctx.lake, ctx.cfg, read_raw(ctx.spark, str(folder)), query="bench",
                               batch_id=n, stored=stored)
        row = {"batch": n, "seconds": round(time.monotonic() - started, 3), "merge_seconds": report.merge_seconds,
               "ingest_stage_seconds": report.ingest_stage_seconds, "new_events": report.new_events,
               "spark_jobs": len(tracker.getJobIdsForGroup(None)) - jobs_before}
        print(json.dumps(row), flush=True)
        if n >= args.warmup:
            measured.append(row)
    ctx.stop()

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in measured), 2)

    ingest = [sum(r["ingest_stage_seconds"].values()) for r in measured]
    out = {"benchmark": "microbatch", "master": args.master, "rate": args.rate, "warmup": args.warmup,
           "batches": measured, "median_seconds": median("seconds"), "median_merge_seconds": median("merge_seconds"),
           "median_ingest_seconds": round(statistics.median(ingest), 2), "median_spark_jobs": median("spark_jobs")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}: median batch {out['median_seconds']}s (ingest {out['median_ingest_seconds']}s, "
          f"merges {out['median_merge_seconds']}s, {out['median_spark_jobs']:.0f} Spark jobs)")


if __name__ == "__main__":
    main()
