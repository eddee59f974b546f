"""Forget cost: seconds to forget 1 and 1,000 people from a lake of --events events (issue 25 asks for 10M).

Builds the lake once under --work (generator, batch ingest, full refresh, online store in SQLite), keeps a
copy, and for each --people count restores the copy and runs ``run_forget`` on that many of the
generator's raw ids (u0, u1, ...), timing the whole job: tombstones, deletes, the full refresh that
recomputes the features without them, the online store, the history purge, the rewrite of the raw
landing files that hold them, and the audit record (no model is trained here: scrubbing a bundle is a
few seconds of TensorFlow export per bundle).

Writes bench/results/forget.json.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from _common import base_parser, write_result

KEY = "bench-forget-key-0123456789-0123456789"


def build(home: Path, events: int, users: int, master: str) -> float:
    """Generate, ingest and refresh into ``home``; the seconds it took."""
    from recsys_lib.core.config import load_config
    from recsys_lib.datagen.synthetic import GeneratorSpec
    from recsys_lib.pipelines.context import start
    from recsys_lib.pipelines.data import run_generate
    from recsys_lib.pipelines.features import run_refresh
    from recsys_lib.pipelines.ingest import run_ingest

    t0 = time.monotonic()
    cfg = load_config(overrides=[f"home={home}", f"spark.master={master}"])
    run_generate(GeneratorSpec(users=users, items=max(1000, users // 10), days=14, events=events, bad_fraction=0.0,
                               seed=5), home / "landing" / "bench")
    ctx = start(cfg)
    try:
        run_ingest(ctx.spark, ctx.lake, cfg, str(home / "landing" / "bench"))
        run_refresh(ctx.spark, ctx.lake, cfg)
    finally:
        ctx.stop()
    return round(time.monotonic() - t0, 1)


def forget(home: Path, people: int, master: str) -> dict[str, object]:
    from recsys_lib.core.config import load_config
    from recsys_lib.pipelines.context import start
    from recsys_lib.pipelines.forget import run_forget

    cfg = load_config(overrides=[f"home={home}", f"spark.master={master}"])
    ctx = start(cfg)
    try:
        t0 = time.monotonic()
        done = run_forget(ctx.spark, ctx.lake, cfg, [f"u{n}" for n in range(people)])
        seconds = round(time.monotonic() - t0, 1)
    finally:
        ctx.stop()
    return {"people": people, "seconds": seconds, "events_deleted": done.rows_deleted.get("events"),
            "landing_lines_removed": done.rows_deleted.get("landing_lines"), "files_removed": done.files_removed,
            "online_removed": done.online_removed}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], "forget.json", sizes=False)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--people", type=int, nargs="+", default=[1, 1000])
    args = parser.parse_args()
    os.environ.setdefault("RECSYS_ID_KEY", KEY)
    built = Path(args.work) / f"forget-{args.events}"
    build_seconds = None
    if not (built / "lake" / "events").exists():
        shutil.rmtree(built, ignore_errors=True)
        build_seconds = build(built, args.events, args.users, args.master)
    runs = []
    for people in args.people:
        home = Path(args.work) / f"forget-{args.events}-run"
        shutil.rmtree(home, ignore_errors=True)
        shutil.copytree(built, home)  # with its landing folder: the forget rewrites the raw files too
        runs.append(forget(home, people, args.master))
        print(runs[-1], flush=True)
    write_result(args.out, "forget", args.master, events=args.events, users=args.users, build_seconds=build_seconds,
                 runs=runs)


if __name__ == "__main__":
    main()
