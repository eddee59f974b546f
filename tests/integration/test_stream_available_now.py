"""End to end: `recsys stream --available-now` over two drops equals a full refresh.

Also with the checkpoint deleted between the drops (an operator's mistake, or a fresh
checkpoint on purpose): its batch ids start again at 0, and every new event must still
be folded exactly once (the first drop's events come back as duplicates)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_lib.datagen.synthetic import GeneratorSpec, generate
from tests.spark.helpers import assert_same_state, by_key, stored_states

pytestmark = [pytest.mark.slow, pytest.mark.spark]
RECSYS = str(Path(sys.executable).with_name("recsys"))


def _recsys(*args: str) -> str:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    proc = subprocess.run([RECSYS, *args], env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("checkpoint", ["kept", "deleted"])
def test_available_now_twice_then_refresh_agrees(spark, tmp_path, checkpoint):
    from recsys_lib.core.config import load_config
    from recsys_lib.features import entities
    from recsys_lib.lake import open_lake
    from recsys_lib.streaming.job import last_batches

    raw, landing, home = tmp_path / "raw", tmp_path / "landing", tmp_path / "home"
    generate(GeneratorSpec(users=80, items=60, days=4, events=4_000, seed=31, compress=False), raw)
    manifest = json.loads((raw / "_manifest.json").read_text())
    days = sorted(p for p in raw.iterdir() if p.name.startswith("date="))
    common = ["--set", f"home={home}", "--set", "spark.master=local[2]", "--set", "spark.driver_memory=1g"]
    landing.mkdir()
    for n, drop in enumerate((days[:2], days[2:])):
        if n and checkpoint == "deleted":
            shutil.rmtree(home / "checkpoints" / "features")
        for day in drop:  # atomic drop: the whole day folder appears by rename
            day.rename(landing / day.name)
        _recsys("stream", "--input", str(landing), "--available-now", *common)
        if n == 0:
            after_first = open_lake(spark, load_config(overrides=[f"home={home}"]), engine="delta-rs").read(
                "events").count()
    status = _recsys("stream-status", *common)
    assert "batch" in status

    cfg = load_config(overrides=[f"home={home}"])
    lake = open_lake(spark, cfg, engine="delta-rs")
    assert lake.read("events").count() == manifest["valid_events"]
    batches = last_batches(cfg, limit=100)
    if checkpoint == "deleted":  # the new checkpoint's batches re-read the first drop (duplicates now)
        assert sum(b["new_events"] for b in batches) == manifest["valid_events"] - after_first > 0
        assert sum(b["duplicates"] for b in batches) >= after_first > 0
    # the default engine: each batch's files read straight from the checkpoint's list, ingested on the driver
    assert batches and {(b["read_by"], b["ingest_engine"]) for b in batches} == {("files", "local")}
    incremental = {n: stored_states(lake, e, cfg.features) for n, e in entities(cfg.features).items()}
    _recsys("features", "refresh", *common)
    for name, entity in entities(cfg.features).items():
        assert_same_state(by_key(lake.read(entity.table), entity), incremental[name], entity)
