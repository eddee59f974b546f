"""Fault soak: the fault scenarios, N times each with random kill points; runs and losses per scenario.

* ``stream``: four days of raw files are dropped into the landing folder while ``recsys stream``
  is SIGKILLed again and again (at a random named fault point, or at a random moment from
  outside, the whole process group), then ``--available-now`` drains the rest. A loss is any
  event missing or stored twice in ``events``, any view not counted exactly once in
  ``user_features`` (base plus pending rows; counts add), or ``recsys online verify`` failing.
* ``refresh``: a full refresh SIGKILLed between its table overwrites. A loss is a batch reader
  not pinned to the last complete refresh, or ``online sync --full`` + ``online verify`` failing.
* ``ingest``: a batch ingest SIGKILLed after a random one of its commits (a cut gzip file among
  the raw files, so all three are real), then run again. A loss is an event missing or stored
  twice, a bad line not quarantined exactly once, or the cut file not recorded exactly once.
* ``online``: ``recsys online sync`` SIGKILLed at a random point of a full load or of a
  catch-up, then run again. A loss is ``online verify`` failing.
* ``writers``: two ``recsys ingest`` of overlapping folders started at the same moment. A loss
  is an event missing or stored twice, or a run failing.

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
from collections.abc import Callable
from pathlib import Path

from _common import base_parser, bench_env, write_result

RECSYS = str(Path(sys.executable).with_name("recsys"))
STREAM_POINTS = ["after_ingest_commit", "between_feature_merges", "before_online_write", "before_checkpoint_commit"]
INGEST_POINTS = ["after_corrupt_files_commit", "between_ingest_commits", "after_ingest_commits"]


def _command(home: Path, args: list[str], fault: str | None) -> tuple[list[str], dict[str, str]]:
    env = {**bench_env(), "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("RECSYS_FAULT_POINT", None)
    if fault:
        env["RECSYS_FAULT_POINT"] = fault
    full = [RECSYS, *args, "--set", f"home={home}", "--set", "spark.master=local[2]", "--set", "spark.driver_memory=1g"]
    return full, env


def _run(home: Path, args: list[str], *, fault: str | None = None, log: Path) -> subprocess.CompletedProcess:
    """Run ``recsys <args>`` on ``home`` to its end (or its SIGKILL at ``fault``), output appended to ``log``."""
    full, env = _command(home, args, fault)
    with log.open("a") as fh:
        return subprocess.run(full, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=900, check=False)


def _start(home: Path, args: list[str], *, fault: str | None = None, log: Path) -> subprocess.Popen:
    """:func:`_run` in the background, in its own process group."""
    full, env = _command(home, args, fault)
    with log.open("a") as fh:
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


def stream_run(work: Path, rng: random.Random, kills: int = 3) -> dict:
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
        proc = _start(home, ["stream", "--input", str(landing), "--trigger", "1s",
                             "--set", "streaming.max_files_per_trigger=1"], fault=fault, log=log)
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
    views = _sql(str(lake / "events"), "select count(*) n from t where event_type = 'view'")[0]["n"]
    counted = _sql(str(lake / "user_features"), "select sum(view_count) n from t")[0]["n"]
    verify = _run(home, ["online", "verify"], log=log).returncode
    losses = {"events_missing_or_extra": _events_lost(home, manifest["valid_events"]),
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


def _events_lost(home: Path, expected: int) -> int:
    """Events missing from ``events`` or stored twice."""
    stored = _sql(str(home / "lake" / "events"), "select count(*) n, count(distinct event_id) d from t")[0]
    return abs(stored["n"] - expected) + stored["n"] - stored["d"]


def _ingest_losses(home: Path, manifest: dict) -> dict[str, int]:
    """Events missing or stored twice, bad lines not quarantined once, the cut file not recorded once."""
    lake = home / "lake"
    quarantined = _sql(str(lake / "events_quarantine"), "select count(*) n, count(distinct record_key) d from t")[0]
    files = _sql(str(lake / "quarantined_files"), "select count(*) n from t")[0]["n"]
    return {"events_missing_or_extra": _events_lost(home, manifest["valid_events"]),
            "quarantine_missing_or_extra":
                abs(quarantined["n"] - manifest["bad"]) + quarantined["n"] - quarantined["d"],
            "corrupt_file_not_recorded_once": abs(files - 1)}


def _cut_gzip(folder: Path) -> None:
    import gzip

    whole = gzip.compress(b"".join(b'{"event_id": "cut%d"}\n' % i for i in range(2000)))
    (folder / "date=2024-01-01" / "zz-cut.jsonl.gz").write_bytes(whole[: len(whole) // 2])


def ingest_run(work: Path, rng: random.Random) -> dict:
    home, raw, log = work / "home", work / "raw", work / "run.log"
    manifest = _generate(raw, 3000, rng.randrange(1 << 30), days=2)
    _cut_gzip(raw)
    fault = rng.choice(INGEST_POINTS)
    killed = _run(home, ["ingest", "--input", str(raw)], fault=fault, log=log).returncode
    rerun = _run(home, ["ingest", "--input", str(raw)], log=log).returncode
    losses = {"not_killed": int(killed != -signal.SIGKILL), "rerun_failed": int(rerun != 0),
              **_ingest_losses(home, manifest)}
    return {"kill": fault, "losses": losses, "lost": sum(losses.values())}


def online_run(work: Path, rng: random.Random) -> dict:
    home, log = work / "home", work / "run.log"
    offline = ["--set", "online.enabled=false"]
    raws = [work / f"raw{n}" for n in range(2)]
    for raw in raws:
        _generate(raw, 2000, rng.randrange(1 << 30), days=2)
    _run(home, ["ingest", "--input", str(raws[0])], log=log)
    _run(home, ["features", "refresh"], log=log)
    full = rng.random() < 0.5
    if full:  # the refresh overwrites: the sync loads a new generation
        _run(home, ["ingest", "--input", str(raws[1])], log=log)
        _run(home, ["features", "refresh", *offline], log=log)
        fault = rng.choice(["online_between_tables", "online_before_switch"]) + f"@{rng.randint(1, 2)}"
    else:  # the stream merges: the sync catches up from the change feed
        _run(home, ["stream", "--input", str(raws[1]), "--available-now", *offline], log=log)
        fault = f"online_before_applied@{rng.randint(1, 3)}"
    killed = _run(home, ["online", "sync"], fault=fault, log=log).returncode
    synced = _run(home, ["online", "sync"], log=log).returncode
    verify = _run(home, ["online", "verify"], log=log).returncode
    losses = {"not_killed": int(killed != -signal.SIGKILL), "sync_or_verify_failed": int(synced != 0 or verify != 0)}
    return {"kill": fault, "losses": losses, "lost": sum(losses.values())}


def writers_run(work: Path, rng: random.Random) -> dict:
    home, raw, log = work / "home", work / "raw", work / "run.log"
    _generate(raw, 3000, rng.randrange(1 << 30), days=3)
    days = sorted(p for p in raw.iterdir() if p.name.startswith("date="))
    folders = [work / "first", work / "second"]
    for folder, picked in zip(folders, (days[:2], days[1:]), strict=True):
        for day in picked:
            shutil.copytree(day, folder / day.name)
    procs = [_start(home, ["ingest", "--input", str(f)], log=log) for f in folders]
    codes = [p.wait(timeout=900) for p in procs]
    expected = json.loads((raw / "_manifest.json").read_text())["valid_events"]
    waited = "waiting for the lease on" in log.read_text()
    losses = {"run_failed": sum(c != 0 for c in codes), "events_missing_or_extra": _events_lost(home, expected)}
    return {"second_waited": waited, "losses": losses, "lost": sum(losses.values())}


#: Each scenario's run (the stream's also takes --kills).
SCENARIOS: dict[str, Callable[[Path, random.Random], dict]] = {
    "stream": stream_run, "refresh": refresh_run, "ingest": ingest_run, "online": online_run, "writers": writers_run}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], "faults.json", sizes=False)
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario")
    parser.add_argument("--kills", type=int, default=3, help="stream kills per stream run")
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), choices=list(SCENARIOS))
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
            run = SCENARIOS[scenario](work, rng) if scenario != "stream" else stream_run(work, rng, args.kills)
            runs.append(run | {"seconds": round(time.monotonic() - started, 1)})
            print(scenario, i, run, flush=True)
        results[scenario] = {"runs": len(runs), "losses": sum(r["lost"] for r in runs), "detail": runs}
    write_result(args.out, "faults", args.master, seed=args.seed, scenarios=results, target_losses=0)


if __name__ == "__main__":
    main()
