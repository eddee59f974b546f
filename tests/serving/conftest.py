"""Fixtures of the serving tier: real redis-server processes on free loopback ports, and both store backends."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import RedisCluster, RedisServer, free_port, need_redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """One Redis server for the session; tests isolate themselves with a namespace each."""
    need_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory) -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster on loopback for the session (namespaces isolate the tests)."""
    need_redis()
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def own_redis(tmp_path) -> Iterator[RedisServer]:
    """A Redis server of the test's own (which the test may stop and restart)."""
    need_redis()
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
def store(request, tmp_path):
    """An empty online store of each backend: SQLite, one Redis server, a Redis Cluster."""
    if request.param == "sqlite":
        from recsys_lib.online.sqlite import SqliteStore

        made = SqliteStore(str(tmp_path / "online.sqlite"), grace=0.0)
    else:
        from recsys_lib.online.redis import RedisStore

        cluster = request.param == "redis-cluster"
        server = request.getfixturevalue("redis_cluster" if cluster else "redis_server")
        made = RedisStore(server.url, namespace=f"t{uuid.uuid4().hex[:8]}", grace=0.0, cluster=cluster)
    yield made
    made.clear()
    made.close()


class Served:
    """A small lake with refreshed features, the online store loaded (SQLite) and an untrained exported model."""

    def __init__(self, spark, home: Path, *, pseudonymize: bool = False) -> None:
        from recsys_lib.core.config import load_config
        from recsys_lib.datagen.synthetic import GeneratorSpec
        from recsys_lib.lake import open_lake
        from recsys_lib.pipelines.data import run_generate
        from recsys_lib.pipelines.features import run_refresh
        from recsys_lib.pipelines.ingest import run_ingest
        from tests.serving.helpers import export_untrained

        self.home = home
        # ``pseudonymize``: off here, as the tests pick users from the store (already pseudonyms) and ask the
        # API for them; tests/spark/test_privacy.py serves a lake with pseudonyms on.
        self.cfg = load_config(overrides=[f"home={home}", "spark.master=local[2]", "lake.retry_backoff=1ms",
                                          "online.generation_grace=0s", f"privacy.pseudonymize={pseudonymize}"])
        self.lake = open_lake(spark, self.cfg, engine="delta-rs")
        run_generate(GeneratorSpec(users=80, items=60, days=2, events=4000, bad_fraction=0.0, seed=3),
                     home / "landing" / "a")
        run_ingest(spark, self.lake, self.cfg, str(home / "landing" / "a"))
        self.refresh = run_refresh(spark, self.lake, self.cfg)
        export_untrained(self.lake, self.cfg, version="1")


@pytest.fixture(scope="session")
def served(spark, tmp_path_factory) -> Served:
    """The session's served lake (tests that change it restore it or work on a copy)."""
    return Served(spark, tmp_path_factory.mktemp("served") / "home")


class ApiServer:
    """``create_app`` under a real uvicorn server on a free loopback port, in a thread."""

    def __init__(self, app) -> None:
        import threading

        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
