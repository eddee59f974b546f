"""Fault soak: the fault scenarios, N times each with random kill points; runs and losses per scenario.

* ``stream``: four days of raw files are dropped into the landing folder while ``recsys stream``
  is SIGKILLed again and again (at a random named fault point, or at a random moment from
  outside, the whole process group), then ``--available-now`` drains the rest. A loss is any
  event missing or stored twice in ``events``, any view not counted exactly once in
  ``user_features`` (base plus pending rows; counts add), or ``recsys online verify`` failing.
* ``refresh``: a full refresh SIGKILLed between its table overwrites. A loss is a batch reader
  not pinned to the last complete refresh, or ``online sync --full`` + ``online verify`` failing.

Writes bench/results/faults.json. The target is 0 losses. Slow (minutes per run): not in ``make test``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from _common import base_parser, bench_env, write_result

RECSYS = str(Path(sys.executable).with_name("recsys"))
STREAM_POINTS = ["after_ingest_commit", "between_feature_merges", "before_online_write", "before_checkpoint_commit"]


def _run(home: Path, args: list[str], *, fault: str | None = None, log: Path, wait: bool = True,
         ) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {**bench_env(), "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("RECSYS_FAULT_POINT", None)
    if fault:
        env["RECSYS_FAULT_POINT"] = fault
    full = [RECSYS, *args, "--set", f"home={home}", "--set", "spark.master=local[2]", "--set", "spark.driver_memory=1g"]
    with log.open("a") as fh:
        if wait:
            return subprocess.run(full, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=900, check=False)
        return subprocess.Popen(full, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def _generate(out: Path, events: int, seed: int, days: int) -> dict:
    subprocess.run([RECSYS, "generate", "--out", str(out), "--events", str(events), "--users", "80", "--items", "60",
                    "--days", str(days), "--seed", str(seed), "--no-gzip"], check=True, capture_output=True,
                   timeout=300)
    return json.loads((out / "_manifest.json").read_text())


def _sql(uri: str, query: str) -> list[dict]:
    import pyarrow as pa
    from deltalake import DeltaTable, QueryBuilder

    return pa.table(QueryBuilder().register("t", DeltaTable(uri)).execute(query).read_all()).to_pylist()


def stream_run(work: Path, rng: random.Random, kills: int) -> dict:
    home, landing, raw = work / "home", work / "landing", work / "raw"
    log = work / "run.log"
    manifest = _generate(raw, 4000, rng.randrange(1 << 30), days=kills + 1)
    days = sorted(p for p in raw.iterdir() if p.name.startswith("date="))
    landing.mkdir(parents=True)
    plan = []
    for _ in range(kills):
        day = days.pop(0)
        day.rename(landing / day.name)
        fault = rng.choice(STREAM_POINTS + [None])
        proc = _run(home, ["stream", "--input", str(landing), "--trigger", "1s",
                           "--set", "streaming.max_files_per_trigger=1"], fault=fault, log=log, wait=False)
        if fault is None:
            time.sleep(rng.uniform(6, 20))
        else:
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(proc)
        plan.append(fault or "random moment")
    for day in days:
        day.rename(landing / day.name)
    drained = _run(home, ["stream", "--input", str(landing), "--available-now"], log=log).returncode
    lake = home / "lake"
    stored = _sql(str(lake / "events"), "select count(*) n, count(distinct event_id) d from t")[0]
    views = _sql(str(lake / "events"), "select count(*) n from t where event_type = 'view'")[0]["n"]
    counted = _sql(str(lake / "user_features"), "select sum(view_count) n from t")[0]["n"]
    verify = _run(home, ["online", "verify"], log=log).returncode
    losses = {"events_missing_or_extra": abs(stored["n"] - manifest["valid_events"]) + stored["n"] - stored["d"],
              "views_miscounted": abs(views - (counted or 0)), "online_verify_failed": int(verify != 0),
              "drain_failed": int(drained != 0)}
    return {"kills": plan, "losses": losses, "lost": sum(losses.values())}


def refresh_run(work: Path, rng: random.Random) -> dict:
    home, log = work / "home", work / "run.log"
    for n in range(2):
        raw = work / f"raw{n}"
        _generate(raw, 3000, rng.randrange(1 << 30), days=2)
        _run(home, ["ingest", "--input", str(raw)], log=log)
        if n == 0:
            _run(home, ["features", "refresh"], log=log)
    fault = f"between_refresh_tables@{rng.randint(1, 2)}"
    killed = _run(home, ["features", "refresh"], fault=fault, log=log).returncode
    from recsys_lib.core.config import load_config
    from recsys_lib.features import entities
    from recsys_lib.features.generations import pinned_versions
    from recsys_lib.lake import driver_lake

    cfg = load_config(overrides=[f"home={home}"])
    lake = driver_lake(cfg)
    tables = [e.table for e in entities(cfg.features).values()]
    generations = _sql(str(home / "lake" / "feature_generations"), "select versions from t")
    last_complete = json.loads(generations[-1]["versions"]) if generations else None
    pinned = pinned_versions(lake, tables)
    sync = _run(home, ["online", "sync", "--full"], log=log).returncode
    verify = _run(home, ["online", "verify"], log=log).returncode
    losses = {"not_killed": int(killed != -signal.SIGKILL), "reader_not_pinned": int(pinned != last_complete),
              "online_sync_or_verify_failed": int(sync != 0 or verify != 0)}
    return {"kill": fault, "losses": losses, "lost": sum(losses.values())}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], "faults.json", sizes=False)
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario")
    parser.add_argument("--kills", type=int, default=3, help="stream kills per stream run")
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--scenarios", nargs="*", default=["stream", "refresh"])
    args = parser.parse_args()
    rng = random.Random(args.seed)
    results: dict[str, dict] = {}
    for scenario in args.scenarios:
        runs = []
        for i in range(args.runs):
            work = Path(args.work) / f"faults-{scenario}-{i}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            started = time.monotonic()
            run = stream_run(work, rng, args.kills) if scenario == "stream" else refresh_run(work, rng)
            runs.append(run | {"seconds": round(time.monotonic() - started, 1)})
            print(scenario, i, run, flush=True)
        results[scenario] = {"runs": len(runs), "losses": sum(r["lost"] for r in runs), "detail": runs}
    write_result(args.out, "faults", args.master, seed=args.seed, scenarios=results, target_losses=0)


if __name__ == "__main__":
    main()
