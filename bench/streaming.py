"""Streaming benchmarks; writes bench/results/streaming.json.

* incremental: merge a 1% increment into tables built from N events (a copy of
  bench/work/features-home-N, made by bench/features.py) with
  ``recsys stream --available-now``, then time a full refresh of the same lake in
  the same run; report the ratio (target <= 5%). Twice: as the first batch of a
  cold process, and as the second batch of a process warmed by a small file (as
  in a long-running stream).
* freshness: run ``recsys stream --trigger 0.5s`` (``--trigger``, the default) while a feeder drops
  ``--rate`` events a second for ``--seconds``, as one file (atomic rename) per second
  at a random moment within that second, so arrivals meet every phase of the trigger
  clock. Each file carries a sentinel user; the delay is from the file's rename to the
  sentinel being readable in ``user_features`` (target p99 <= 2 s). The clock starts
  once a warm-up file is readable (JVM start and the first batch are not counted).
  Repeated for each of ``--other-triggers`` (default 1s).

    python bench/streaming.py --sizes 10000000 --rate 2000 --seconds 120
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, bench_env, run_measured, view_lines, write_result  # noqa: E402 - sibling helper module

#: How often the checker looks for the sentinels (its delay adds to each measured value).
POLL_SECONDS = 0.1


def incremental(recsys: str, work: Path, size: int, master: str, env: dict[str, str]) -> dict:
    """The 1% increment merged by a cold stream process (its first batch) and by a warm one.

    Warm: the process first applies a small warm-up file (1,000 events), then the
    increment as its second batch, as a long-running stream would. Both runs start
    from a fresh copy of the lake; the full refresh is timed on the cold run's lake.
    """
    base = work / f"features-home-{size}"
    if not (base / "lake" / "user_features" / "_delta_log").exists():
        raise SystemExit(f"{base} has no feature tables: run bench/features.py --sizes {size} first")
    increment = _generated(recsys, work / f"increment-{size // 100}", size // 100, "2024-02-01", 99, size, env)
    warm_up = _generated(recsys, work / "increment-warm-up", 1_000, "2024-02-02", 98, size, env)
    cold = _stream_run(recsys, work, base, size, master, env, [increment], "cold")
    home = work / f"incremental-home-{size}-cold"
    summary = home / "refresh.json"
    run_measured([recsys, "features", "refresh", "--summary-json", str(summary), *_common(home, master)], env,
                 work / f"incremental-refresh-{size}.log")
    refresh_seconds = json.loads(summary.read_text())["seconds"]
    shutil.rmtree(home, ignore_errors=True)
    warm = _stream_run(recsys, work, base, size, master, env, [warm_up, increment], "warm")
    shutil.rmtree(work / f"incremental-home-{size}-warm", ignore_errors=True)
    result = {"base_events": size, "full_refresh_seconds": refresh_seconds, "target_ratio": 0.05}
    files = len(list(increment.rglob("*.jsonl.gz")))
    for name, batches, wall, peak in (("cold", *cold), ("warm", *warm)):
        measured = batches[-files:]  # the increment's batches (one per file): after the warm-up's, if any
        seconds = sum(b["seconds"] for b in measured)
        merge = sum(b["merge_seconds"] for b in measured)
        result[name] = {
            "increment_events": sum(b["new_events"] for b in measured), "batches_in_run": len(batches),
            "increment_batches": len(measured), "batch_seconds": round(seconds, 2), "merge_seconds": round(merge, 2),
            "ingest_stage_seconds": [b.get("ingest_stage_seconds") for b in measured],
            "read_seconds": [b.get("read_seconds") for b in measured],
            "ratio": round(seconds / refresh_seconds, 3),
            # the feature merge alone (the whole batch also ingests and deduplicates the new events)
            "merge_ratio": round(merge / refresh_seconds, 3),
            "process_wall_seconds": round(wall, 2), "peak_rss_mb": round(peak / 2**20)}
    return result


def _common(home: Path, master: str) -> list[str]:
    return ["--set", f"home={home}", "--set", f"spark.master={master}"]


def _generated(recsys: str, out: Path, events: int, start: str, seed: int, size: int, env: dict[str, str]) -> Path:
    """A one-day raw folder of ``events`` events (generated once)."""
    if not (out / "_manifest.json").exists():
        run_measured([recsys, "generate", "--out", str(out), "--events", str(events), "--days", "1",
                      "--start", start, "--seed", str(seed), "--users", str(max(2000, size // 200)),
                      "--items", str(max(1000, size // 1000))], env, out.with_suffix(".log"))
    return out


def _stream_run(recsys: str, work: Path, base: Path, size: int, master: str, env: dict[str, str],
                folders: list[Path], name: str) -> tuple[list[dict], float, int]:
    """Apply ``folders`` in order, one file per batch, with ``recsys stream --available-now`` on a lake copy."""
    home = work / f"incremental-home-{size}-{name}"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(base / "lake", home / "lake")
    landing = home / "landing"
    stamp = time.time() - 3600
    for n, folder in enumerate(folders):
        for file in sorted(folder.rglob("*.jsonl.gz")):
            target = landing / f"batch-{n}" / file.parent.name / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(file, target)
            os.utime(target, (stamp + n, stamp + n))  # the file source takes files oldest first
    wall, peak, _ = run_measured([recsys, "stream", "--input", str(landing), "--available-now",
                                  *_common(home, master), "--set", "streaming.max_files_per_trigger=1"], env,
                                 work / f"incremental-stream-{size}-{name}.log")
    log = home / "checkpoints" / "features" / "batches.jsonl"
    return [json.loads(x) for x in log.read_text().splitlines()], wall, peak


def freshness(recsys: str, work: Path, rate: int, seconds: int, master: str, env: dict[str, str],
              trigger: str, *, name: str = "freshness",
              probe: Callable[[Path, list[str]], list[str]] | None = None) -> dict:
    """Stream at ``rate`` events/s for ``seconds``; each file's sentinel user's delay until ``probe`` sees it.

    ``probe(home, candidates)`` returns the candidates that are visible (default: rows of the
    ``user_features`` Delta table); bench/serving.py probes the API instead.
    """
    from deltalake import DeltaTable, QueryBuilder

    home, landing = work / f"{name}-home", work / f"{name}-landing"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(landing, ignore_errors=True)
    landing.mkdir(parents=True)
    proc = subprocess.Popen([recsys, "stream", "--input", str(landing), "--trigger", trigger, *_common(home, master)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dropped: dict[str, float] = {}
    seen: dict[str, float] = {}
    stop = threading.Event()

    def feed() -> None:
        # One file of `rate` events per second on average, each at a random moment within its
        # second: arrivals then fall at every phase of the trigger clock, so the percentiles
        # cover the worst phase too (a file arriving just after a trigger waits a whole interval).
        jitter = random.Random(7)
        n = 0
        start = time.time()
        while not stop.is_set() and time.time() - start < seconds:
            time.sleep(max(0.0, start + n + jitter.random() - time.time()))
            sentinel = f"fresh-{n}"
            lines = view_lines(f"f{n}", rate, first_user=sentinel)
            tmp = landing / f".f{n}.jsonl.tmp"
            tmp.write_text("\n".join(lines) + "\n")
            tmp.rename(landing / f"f{n:05d}.jsonl")
            dropped[sentinel] = time.time()
            n += 1

    table_uri = str(home / "lake" / "user_features")

    def visible_sentinels() -> list[str]:
        if probe is not None:
            return probe(home, ["warm-up", *[u for u in list(dropped) if u not in seen]])
        try:
            rows = QueryBuilder().register("uf", DeltaTable(table_uri)).execute(
                "select user_id from uf where user_id like 'fresh-%' or user_id = 'warm-up'").read_all()
        except Exception:  # noqa: BLE001 - the table may not exist yet
            return []
        return [str(u) for u in rows.column("user_id").to_pylist()]

    # Warm up (JVM start, first batch's planning and code generation) before the clock starts:
    # the target is steady-state freshness, not start-up time.
    warm = landing / ".warm.jsonl.tmp"
    warm.write_text(json.dumps({"event_id": "warm-0", "event_ts": int(time.time() * 1000), "user_id": "warm-up",
                                "event_type": "view", "item_id": "i0", "category_id": "c0"}) + "\n")
    warm.rename(landing / "warm.jsonl")
    warm_deadline = time.time() + 300
    while "warm-up" not in visible_sentinels() and time.time() < warm_deadline:
        time.sleep(0.5)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    deadline = time.time() + seconds + 240
    # (seen also holds the warm-up sentinel: count only the dropped files' sentinels)
    while time.time() < deadline and (feeder.is_alive() or len(dropped.keys() - seen.keys()) > 0):
        users = visible_sentinels()
        now = time.time()
        for user in users:
            seen.setdefault(user, now)
        time.sleep(POLL_SECONDS)
    stop.set()
    proc.kill()
    proc.wait()
    delays = sorted(seen[s] - dropped[s] for s in seen if s in dropped)
    missing = len(dropped) - len(delays)

    def pct(p: float) -> float | None:
        return round(delays[min(len(delays) - 1, int(p * len(delays)))], 2) if delays else None

    return {"rate_events_per_second": rate, "seconds": seconds, "trigger": trigger, "poll_seconds": POLL_SECONDS,
            "files": len(dropped), "seen": len(delays),
            "not_seen_in_time": missing, "p50_s": pct(0.50), "p95_s": pct(0.95), "p99_s": pct(0.99),
            "target_p99_s": 2.0}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], "streaming.json")
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--trigger", default="0.5s",
                        help="the stream's trigger interval in the freshness run (the config default)")
    parser.add_argument("--other-triggers", nargs="*", default=["1s"],
                        help="further freshness runs with these triggers (recorded as freshness_other_triggers)")
    parser.add_argument("--parts", nargs="+", choices=["incremental", "freshness"],
                        default=["incremental", "freshness"], help="which measurements to run (default: both)")
    args = parser.parse_args()
    recsys = str(Path(sys.executable).with_name("recsys"))
    env = bench_env()
    work = Path(args.work)
    out: dict = {}
    if "incremental" in args.parts:
        out["incremental"] = [incremental(recsys, work, s, args.master, env) for s in args.sizes]
        print(json.dumps(out["incremental"]), flush=True)
    if "freshness" in args.parts:
        out["freshness"] = freshness(recsys, work, args.rate, args.seconds, args.master, env, args.trigger)
        print(json.dumps(out["freshness"]), flush=True)
        out["freshness_other_triggers"] = [freshness(recsys, work, args.rate, args.seconds, args.master, env, t)
                                           for t in args.other_triggers]
        print(json.dumps(out["freshness_other_triggers"]), flush=True)
    write_result(args.out, "streaming", args.master, **out)


if __name__ == "__main__":
    main()
