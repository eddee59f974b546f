"""End to end: `recsys stream --available-now` over three drops equals a full refresh.

The checkpoint is kept for the second drop (only new files are read) and deleted before the
third (an operator's mistake, or a fresh checkpoint on purpose): its batch ids start again at
0, and every new event must still be folded exactly once (the earlier drops' events come back
as duplicates)."""

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


def test_available_now_with_the_checkpoint_kept_then_deleted_then_refresh_agrees(spark, tmp_path):
    from recsys_lib.core.config import load_config
    from recsys_lib.features import entities
    from recsys_lib.lake import open_lake
    from recsys_lib.streaming.job import last_batches

    raw, landing, home = tmp_path / "raw", tmp_path / "landing", tmp_path / "home"
    generate(GeneratorSpec(users=80, items=60, days=4, events=4_000, seed=31, compress=False), raw)
    manifest = json.loads((raw / "_manifest.json").read_text())
    days = sorted(p for p in raw.iterdir() if p.name.startswith("date="))
    common = ["--set", f"home={home}", "--set", "spark.master=local[2]", "--set", "spark.driver_memory=1g"]
    cfg = load_config(overrides=[f"home={home}"])
    landing.mkdir()
    stored = []  # events after each drop
    for n, drop in enumerate((days[:2], days[2:3], days[3:])):
        if n == 2:  # the operator deletes the checkpoint before the third drop
            shutil.rmtree(home / "checkpoints" / "features")
        for day in drop:  # atomic drop: the whole day folder appears by rename
            day.rename(landing / day.name)
        _recsys("stream", "--input", str(landing), "--available-now", *common)
        stored.append(open_lake(spark, cfg, engine="delta-rs").read("events").count())
        if n == 1:  # the kept checkpoint: only the new day's files were read (no re-read first drop among the
            kept = last_batches(cfg, limit=100)  # duplicates, just the generator's own duplicate lines)
            assert sum(b["new_events"] for b in kept) == stored[1]
            assert sum(b["duplicates"] for b in kept) <= manifest["duplicates"] < stored[0]
    status = _recsys("stream-status", *common)
    assert "batch" in status

    lake = open_lake(spark, cfg, engine="delta-rs")
    assert stored[0] < stored[1] < stored[2] == manifest["valid_events"]
    # the new checkpoint's batches re-read the first two drops (duplicates now) and fold the third once
    batches = last_batches(cfg, limit=100)
    assert sum(b["new_events"] for b in batches) == stored[2] - stored[1]
    assert sum(b["duplicates"] for b in batches) >= stored[1]
    # the default engine: each batch's files read straight from the checkpoint's list, ingested on the driver
    assert batches and {(b["read_by"], b["ingest_engine"]) for b in batches} == {("files", "local")}
    incremental = {n: stored_states(lake, e, cfg.features) for n, e in entities(cfg.features).items()}
    _recsys("features", "refresh", *common)
    for name, entity in entities(cfg.features).items():
        assert_same_state(by_key(lake.read(entity.table), entity), incremental[name], entity)
