"""Redis restarted (empty: no persistence) while the stream writes to it: the stream goes on, and the store
is rebuilt from Delta by the next batch.

Real processes: a redis-server on a free port, the stream, the CLI. While Redis is down the
stream's Delta commits go on and each failed store write is counted; after the restart
the store holds nothing, so the next batch loads a new generation. The scenario ends with
``recsys online verify`` (every stored row against Delta) and the feature tables against
a full refresh.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from recsys_lib.core.config import load_config
from recsys_lib.lake import open_lake
from tests.faults.helpers import (
    assert_features_match_recomputation,
    generate,
    ok,
    recsys,
    start,
    stream_batches,
    wait_for,
)
from tests.redis_server import RedisServer, need_redis

pytestmark = [pytest.mark.faults, pytest.mark.spark, pytest.mark.serving]


def _drop(raw: Path, landing: Path) -> None:
    """Rename the next day's folder of ``raw`` into the landing folder (atomic, as producers must)."""
    folder = sorted(raw.glob("date=*"))[0]
    landing.mkdir(parents=True, exist_ok=True)
    folder.rename(landing / folder.name)


@pytest.mark.timeout(900)
def test_redis_restarted_mid_stream(spark, tmp_path):
    need_redis()
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    home, landing, log = tmp_path / "home", tmp_path / "landing", tmp_path / "stream.log"
    online = ("--set", "online.backend=redis", "--set", f"online.redis_url={redis.url}", "--set", "online.timeout=1s")
    raw = generate(tmp_path / "raw", events=3000, seed=51, days=4)
    _drop(raw, landing)
    ok(recsys(home, "ingest", "--input", str(landing), extra=online))
    ok(recsys(home, "features", "refresh", extra=online))
    stream = start(home, "stream", "--input", str(landing), "--trigger", "0.5s", log=log, extra=online)
    try:
        _drop(raw, landing)
        wait_for("the first batch", lambda: any(b["new_events"] for b in stream_batches(home)), log)
        assert stream_batches(home)[-1]["online"]["failures"] == 0

        redis.stop()  # its data is gone: persistence is off
        _drop(raw, landing)
        wait_for("a batch while Redis is down", lambda: stream_batches(home)[-1]["online"]["failures"] > 0, log)
        redis.start()  # same port, empty
        _drop(raw, landing)
        wait_for("the store to be rebuilt", lambda: recsys(home, "online", "verify", extra=online).returncode == 0,
              log)
        assert stream.poll() is None  # the stream never stopped
    finally:
        stream.send_signal(signal.SIGKILL)
        stream.wait(timeout=60)
        redis.stop()
    cfg = load_config(overrides=[f"home={home}"])
    lake = open_lake(spark, cfg)
    assert lake.read("events").count() == lake.read("events").select("event_id").distinct().count()
    assert_features_match_recomputation(spark, lake, cfg, tmp_path / "refreshed")
