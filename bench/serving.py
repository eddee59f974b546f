"""Online serving benchmark: store reads, bulk load, and the HTTP API under open-loop constant-rate load.

Builds a lake of ``--users`` users and ``--items`` items (synthetic events, ingest, full refresh),
exports an untrained model over it (serving latency does not depend on the weights), then for each
backend (SQLite, and a redis-server it starts on a free loopback port):

* bulk load: a full generation of every feature table, rows/s (median of BULK_LOADS loads into an
  empty store; every run is recorded);
* store read of one user's row and of 100 users' rows, in-process, p50/p99 over --reads calls;
* ``recsys serve`` started as a subprocess; ``GET /features/user/<id>`` at --features-rate req/s and
  ``GET /recommendations/<id>?k=10`` at --recs-rate req/s, each for --seconds after an unrecorded
  warm-up of WARMUP_SECONDS at the same rate, from a small
  asyncio HTTP/1.1 client on keep-alive connections. Requests are sent on a fixed schedule and
  each latency is measured from its scheduled send time, so a slow server cannot hide its queue
  (no coordinated omission). Loopback only; bounded in count and time.

It also times the old way, one ``recsys recommend`` process, and reports the ratio. Writes
bench/results/serving.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import ROOT, base_parser, bench_env, write_result

sys.path.insert(0, str(ROOT))  # bench/ runs as a script: make tests.serving (untrained export, redis-server) importable


#: Each endpoint first runs this long at its rate, unrecorded: the first seconds of a fresh process (code
#: paths, allocator, TensorFlow's first calls at new batch sizes) are start-up, not the steady state.
WARMUP_SECONDS = 5.0
#: Bulk loads per backend (the first in a process is also the first read of the tables); the median is reported.
BULK_LOADS = 3


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "max_ms": round(float(ms.max()), 3), "n": len(ms)}


async def open_loop(port: int, paths: list[str], rate: float, seconds: float, connections: int = 32) -> dict:
    """GET ``paths`` round-robin at ``rate`` req/s for ``seconds``; latency from each scheduled send time."""
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2
    latencies: list[float] = []
    errors = 0
    next_slot = 0

    async def worker() -> None:
        nonlocal next_slot, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while True:
            i = next_slot
            if i >= total:
                break
            next_slot += 1
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            path = paths[i % len(paths)]
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            await writer.drain()
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - scheduled)
            if not status.startswith(b"HTTP/1.1 200"):
                errors += 1
        writer.close()

    began = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*[worker() for _ in range(connections)]), timeout=seconds * 4 + 30)
    elapsed = time.perf_counter() - began
    return {"rate": rate, "sent": len(latencies), "errors": errors, "achieved_rate": round(len(latencies) / elapsed, 1),
            **percentiles(latencies)}


#: The store and API parts pick users from the store and ask for them by that id, so the lake keeps the
#: generator's ids (pseudonyms on, the API would hash those ids again). Hashing costs about 3 microseconds
#: per id (bench/privacy.py); the freshness part runs with the default, pseudonyms on.
RAW_IDS = "privacy.pseudonymize=false"


def build_lake(home: Path, users: int, items: int, events: int, master: str) -> None:
    from recsys_lib.core.config import load_config
    from recsys_lib.datagen.synthetic import GeneratorSpec
    from recsys_lib.pipelines.context import start
    from recsys_lib.pipelines.data import run_generate
    from recsys_lib.pipelines.features import run_refresh
    from recsys_lib.pipelines.ingest import run_ingest
    from tests.serving.helpers import export_untrained

    cfg = load_config(overrides=[f"home={home}", f"spark.master={master}", "online.enabled=false", RAW_IDS])
    run_generate(GeneratorSpec(users=users, items=items, days=3, events=events, bad_fraction=0.0, seed=11),
                 home / "landing" / "bench")
    ctx = start(cfg)
    try:
        run_ingest(ctx.spark, ctx.lake, cfg, str(home / "landing" / "bench"))
        run_refresh(ctx.spark, ctx.lake, cfg)
        export_untrained(ctx.lake, cfg, version="1", index="auto")
    finally:
        ctx.stop()


def measure_backend(home: Path, overrides: list[str], reads: int, rates: dict[str, float], seconds: float) -> dict:
    from recsys_lib.core.config import load_config
    from recsys_lib.features import online
    from recsys_lib.lake import driver_lake
    from recsys_lib.online import open_store
    from recsys_lib.pipelines.demo_live import ApiProcess

    cfg = load_config(overrides=[f"home={home}", *overrides])
    store = open_store(cfg)
    lake = driver_lake(cfg)
    loads = []
    for _ in range(BULK_LOADS):  # each into an empty store; the median is reported, every run is kept
        store.clear()
        t0 = time.perf_counter()
        loaded = online.load_generation(store, lake, cfg)
        loads.append((time.perf_counter() - t0, sum(t["seconds"] for t in loaded["tables"].values()), loaded))
    load_seconds, table_seconds, loaded = sorted(loads, key=lambda run: run[0])[len(loads) // 2]
    rows = sum(t["rows"] for t in loaded["tables"].values())
    users = sorted(k for k, _ in store.scan("user_features"))
    rng = np.random.default_rng(0)
    one, hundred = [], []
    for _ in range(reads):
        key = users[rng.integers(len(users))]
        t = time.perf_counter()
        store.read("user_features", [key])
        one.append(time.perf_counter() - t)
    for _ in range(max(reads // 10, 50)):
        keys = list(rng.choice(users, 100, replace=False))
        t = time.perf_counter()
        store.read("user_features", keys)
        hundred.append(time.perf_counter() - t)
    result = {"bulk_load": {"rows": rows, "seconds": round(load_seconds, 3),
                            "runs_rows_per_second": [round(rows / run[0]) for run in loads],
                            "runs_tables_rows_per_second": [round(rows / run[1]) for run in loads],
                            "rows_per_second": round(rows / load_seconds),
                            "tables_rows_per_second": round(rows / table_seconds), "tables": loaded["tables"],
                            "note": "rows_per_second: the whole new generation (tables, catch-up, switch, "
                                    "purchases from every event); tables_rows_per_second: reading, encoding and "
                                    "writing the feature rows only"},
              "store_read_1": percentiles(one), "store_read_100": percentiles(hundred), "users": len(users)}
    server = ApiProcess(cfg, overrides)
    try:
        result["server_start_seconds"] = server.start_seconds
        pick = [users[i] for i in rng.integers(len(users), size=2000)]
        for name, paths, rate in (("features", [f"/features/user/{u}" for u in pick], rates["features"]),
                                  ("recommendations", [f"/recommendations/{u}?k=10" for u in pick], rates["recs"])):
            asyncio.run(open_loop(server.port, paths[::-1], rate, WARMUP_SECONDS))  # not recorded
            result[name] = asyncio.run(open_loop(server.port, paths, rate, seconds)) | {
                "warmup_seconds": WARMUP_SECONDS}
    finally:
        server.stop()
    store.close()
    return result


def api_freshness(work: Path, model: Path, rate: int, seconds: int, master: str, trigger: str) -> dict:
    """bench/streaming.py's freshness run, probing ``GET /features/user/<sentinel>`` of a live ``recsys serve``."""
    import shutil

    import httpx
    from streaming import freshness

    from recsys_lib.core.config import load_config
    from recsys_lib.pipelines.demo_live import ApiProcess

    servers: list[ApiProcess] = []

    def probe(home: Path, candidates: list[str]) -> list[str]:
        if not servers:  # the stream has just laid out the home: give it a model and start the API
            shutil.copytree(model, home / "serving" / "current")
            servers.append(ApiProcess(load_config(overrides=[f"home={home}"])))
        url = servers[0].url
        return [c for c in candidates if httpx.get(f"{url}/features/user/{c}", timeout=5).status_code == 200]

    try:
        return freshness(str(Path(sys.executable).with_name("recsys")), work, rate, seconds, master, bench_env(),
                         trigger, name="serving-freshness", probe=probe)
    finally:
        for server in servers:
            server.stop()


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], "serving.json", sizes=False)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument("--features-rate", type=float, default=1000)
    parser.add_argument("--recs-rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--freshness-seconds", type=int, default=120,
                        help="event -> served: stream load at --stream-rate events/s for this long (0: skip); "
                             "one file per second, so 120 s gives 120 delays and p99 is not simply the maximum")
    parser.add_argument("--stream-rate", type=int, default=2000)
    parser.add_argument("--trigger", default=None, help="the stream's trigger (default: streaming.trigger)")
    parser.add_argument("--only-freshness", action="store_true", help="run the event -> served part alone")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "redis", "redis-cluster"],
                        choices=["sqlite", "redis", "redis-cluster"],
                        help="online stores to measure (redis-cluster: 3 masters on loopback)")
    parser.add_argument("--serve-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config for the server and the store, e.g. serve.batch_wait=0s")
    args = parser.parse_args()
    from recsys_lib.core.config import load_config

    home = Path(args.work) / f"serving-{args.users}-{args.items}"
    if not (home / "serving" / "current" / "meta.json").exists():
        build_lake(home, args.users, args.items, args.events, args.master)
    rates = {"features": args.features_rate, "recs": args.recs_rate}
    extra = [RAW_IDS, *args.serve_set]
    trigger = args.trigger or f"{load_config().streaming.trigger}s"
    if args.only_freshness:
        print(json.dumps(api_freshness(Path(args.work), home / "serving" / "current", args.stream_rate,
                                       args.freshness_seconds, args.master, trigger)))
        return
    from tests.redis_server import RedisCluster, RedisServer

    backends = {}
    for backend in args.backends:
        if backend == "sqlite":
            backends[backend] = measure_backend(home, ["online.backend=sqlite", *extra], args.reads, rates,
                                                args.seconds)
            continue
        server = (RedisCluster(home / "redis-cluster") if backend == "redis-cluster"
                  else RedisServer(home / "redis"))
        server.start()
        try:
            backends[backend] = measure_backend(
                home, ["online.backend=redis", f"online.redis_url={server.url}",
                       f"online.redis_cluster={backend == 'redis-cluster'}", *extra], args.reads, rates, args.seconds)
        finally:
            server.stop()
    fresh = (api_freshness(Path(args.work), home / "serving" / "current", args.stream_rate,
                           args.freshness_seconds, args.master, trigger) if args.freshness_seconds else None)
    user = "u1"
    t = time.monotonic()
    old = subprocess.run([str(Path(sys.executable).with_name("recsys")), "recommend", "--user", user,
                          "--set", f"home={home}", "--set", f"spark.master={args.master}", "--set", RAW_IDS],
                         env=bench_env(), capture_output=True, text=True, check=False)
    old_seconds = time.monotonic() - t
    first = next(iter(backends.values()))
    api_p50 = first["recommendations"]["p50_ms"] / 1000
    write_result(args.out, "serving", args.master, users=args.users, items=args.items, events=args.events,
                 server_config=extra, event_to_served=fresh,
                 backends=backends, old_way={"command": "recsys recommend", "seconds": round(old_seconds, 2),
                                             "exit": old.returncode},
                 speedup_vs_old_way=round(old_seconds / api_p50) if api_p50 else None)


if __name__ == "__main__":
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    main()
