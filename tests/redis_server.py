"""A real redis-server on a free loopback port, for the tests and benchmarks that need one."""

from __future__ import annotations

import os
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


class RedisServer:
    """A redis-server child process on a free loopback port, with persistence off unless ``persist``.

    ``persist`` turns on RDB snapshots and the AOF, uncompressed, so that a test can read the
    files' bytes.
    """

    def __init__(self, folder: Path, *, persist: bool = False) -> None:
        self.folder, self.port, self.persist = folder, free_port(), persist
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.folder.mkdir(parents=True, exist_ok=True)
        files = (["--save", "3600 1", "--appendonly", "yes", "--rdbcompression", "no"] if self.persist
                 else ["--save", "", "--appendonly", "no"])
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


def need_redis() -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed, and CI must run the Redis tests (.ci/run installs it)")
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
