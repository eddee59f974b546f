"""A real redis-server on a free loopback port, for the tests and benchmarks that need one."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A free loopback port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 50000)
        if _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


class RedisServer:
    """A redis-server child process on a free loopback port, with persistence off unless ``persist``.

    ``persist`` turns on RDB snapshots and the AOF, uncompressed, so that a test can read the
    files' bytes.
    """

    def __init__(self, folder: Path, *, persist: bool = False, cluster: bool = False) -> None:
        self.folder, self.persist, self.cluster = folder, persist, cluster
        self.port = free_cluster_port() if cluster else free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.folder.mkdir(parents=True, exist_ok=True)
        files = (["--save", "3600 1", "--appendonly", "yes", "--rdbcompression", "no"] if self.persist
                 else ["--save", "", "--appendonly", "no"])
        if self.cluster:
            files += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", *files,
                                      "--dir", str(self.folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class RedisCluster:
    """A Redis Cluster of ``masters`` redis-servers on loopback, no replicas (``redis-cli --cluster create``)."""

    def __init__(self, folder: Path, masters: int = 3) -> None:
        self.nodes = [RedisServer(folder / f"node{i}", cluster=True) for i in range(masters)]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        import redis

        for node in self.nodes:
            node.start()
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        for node in self.nodes:  # every node must see all slots served before a client connects
            client = redis.Redis(port=node.port)
            while client.cluster("info").get("cluster_state") != "ok":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Redis Cluster did not become ready (node {node.port})")
                time.sleep(0.1)
            client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def need_redis() -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed, and CI must run the Redis tests (.ci/run installs it)")
        pytest.skip("redis-server or redis-cli is not installed (apt-get install -y redis-server)")
