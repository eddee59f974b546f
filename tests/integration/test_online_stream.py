"""The online store under a real stream: a SIGKILL between a Delta commit and the store write is caught up,
and an event dropped into the landing folder reaches the API's features and recommendations."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from recsys_lib.datagen.synthetic import GeneratorSpec, generate

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.serving]
RECSYS = str(Path(sys.executable).with_name("recsys"))


def _run(args, *, fault=None, background=False, log=None):
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("RECSYS_FAULT_POINT", None)
    if fault:
        env["RECSYS_FAULT_POINT"] = fault
    if background:
        return subprocess.Popen([RECSYS, *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return subprocess.run([RECSYS, *args], env=env, capture_output=True, text=True, timeout=600, check=False)


def _drop(landing: Path, name: str, lines: list[dict]) -> None:
    """Write a file beside the landing folder, then rename it in (the file source's contract)."""
    day = landing / "date=2024-01-03"
    day.mkdir(parents=True, exist_ok=True)
    tmp = landing.parent / f".{name}"
    tmp.write_text("".join(json.dumps(line) + "\n" for line in lines))
    tmp.rename(day / name)


def test_kill_before_the_store_write_then_an_event_reaches_the_api(spark, tmp_path):
    from recsys_lib.api import create_app
    from recsys_lib.core.config import load_config
    from recsys_lib.lake import open_lake
    from recsys_lib.pipelines.online import run_stats
    from tests.serving.conftest import ApiServer
    from tests.serving.helpers import export_untrained

    raw, landing, home = tmp_path / "raw", tmp_path / "landing", tmp_path / "home"
    generate(GeneratorSpec(users=50, items=30, days=2, events=1_500, seed=8, compress=False, bad_fraction=0.0),
             raw)
    shutil.copytree(raw / "date=2024-01-01", landing / "date=2024-01-01")
    common = ["--input", str(landing), "--set", f"home={home}", "--set", "spark.master=local[2]",
              "--set", "spark.driver_memory=1g"]
    killed = _run(["stream", "--available-now", *common], fault="before_online_write@1")
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    lagging = _run(["online", "verify", "--set", f"home={home}"])
    assert lagging.returncode == 3 and "the store is at version" in lagging.stdout  # the kill left it behind

    with (tmp_path / "stream.log").open("w") as log:
        stream = _run(["stream", "--trigger", "0.5s", *common], background=True, log=log)
    try:
        cfg = load_config(overrides=[f"home={home}"])
        deadline = time.monotonic() + 180
        # caught up: the restarted stream redid the killed batch, and the store equals every table
        while run_stats(cfg)["rows"].get("item_features", 0) == 0 or \
                _run(["online", "verify", "--set", f"home={home}"]).returncode != 0:
            assert time.monotonic() < deadline, (tmp_path / "stream.log").read_text()[-3000:]
            assert stream.poll() is None, (tmp_path / "stream.log").read_text()[-3000:]
            time.sleep(1)
        export_untrained(open_lake(spark, cfg, engine="delta-rs"), cfg, version="1")
        with ApiServer(create_app(cfg)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.get("/features/user/fresh-user").status_code == 404
            assert client.get("/recommendations/fresh-user").json()["source"] == "popular"
            base = {"event_type": "click", "item_id": "i3", "category_id": "c1", "price": 9.5, "quantity": None,
                    "session_id": "s-new", "query": None, "user_id": "fresh-user"}
            dropped = time.monotonic()
            _drop(landing, "fresh.jsonl", [base | {"event_id": f"fresh-{n}", "event_ts": f"2024-01-03T10:00:0{n}Z"}
                                           for n in range(3)])
            while (row := client.get("/features/user/fresh-user")).status_code == 404:
                assert time.monotonic() - dropped < 60, (tmp_path / "stream.log").read_text()[-3000:]
                time.sleep(0.05)
            seen_after = time.monotonic() - dropped
            assert row.json()["click_count"] == 3 and row.json()["recent_item_ids"] == ["i3"]
            answer = client.get("/recommendations/fresh-user").json()
            assert answer["source"] == "model" and answer["features_as_of"].startswith("2024-01-03T10:00:02")
        print(f"event -> /features in {seen_after:.2f}s")
    finally:
        os.killpg(stream.pid, signal.SIGKILL)
        stream.wait(30)
    drained = _run(["stream", "--available-now", *common])
    assert drained.returncode == 0, drained.stderr[-2000:]
    final = _run(["online", "verify", "--set", f"home={home}"])
    assert final.returncode == 0 and " 0 mismatch line(s)" in final.stdout, final.stdout
