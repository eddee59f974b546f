"""SIGKILL the streaming process again and again; at the end everything is counted exactly once.

Five kills in one run: four at named fault points (right after the events commit,
between two feature-table merges, after every Delta commit but before Spark's
checkpoint commit, and between a pending-layer commit and its compaction) and one
at a random moment, from outside, of the whole process group. Each time the stream
restarts from its checkpoint. Then a final ``--available-now`` run drains the rest.
Many more random kills are ``bench/faults.py``'s soak (``make bench-faults``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recsys_lib.datagen.synthetic import GeneratorSpec, generate
from tests.spark.helpers import assert_same_state, by_key, stored_states

pytestmark = [pytest.mark.slow, pytest.mark.spark]
RECSYS = str(Path(sys.executable).with_name("recsys"))


def _start(args: list[str], fault: str | None, log: Path) -> subprocess.Popen:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("RECSYS_FAULT_POINT", None)
    if fault:
        env["RECSYS_FAULT_POINT"] = fault
    with log.open("a") as fh:
        return subprocess.Popen([RECSYS, *args], env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.timeout(1800)  # five stream runs, each killed, then a drain
def test_sigkill_at_random_moments_and_fault_points(spark, tmp_path):
    from recsys_lib.core.config import load_config
    from recsys_lib.features import entities
    from recsys_lib.ingest.commit import EVENTS_SPEC
    from recsys_lib.lake import open_lake
    from recsys_lib.pipelines.features import run_refresh

    raw, landing, home, log = tmp_path / "raw", tmp_path / "landing", tmp_path / "home", tmp_path / "stream.log"
    generate(GeneratorSpec(users=60, items=40, days=7, events=2_500, seed=41, compress=False), raw)
    manifest = json.loads((raw / "_manifest.json").read_text())
    days = sorted(p for p in raw.iterdir() if p.name.startswith("date="))
    landing.mkdir()
    common = ["--input", str(landing), "--set", f"home={home}", "--set", "spark.master=local[2]",
              "--set", "spark.driver_memory=1g", "--set", "streaming.max_files_per_trigger=1",
              # small enough that almost every batch compacts the user x category layer (a day's file touches
              # 60+ of those keys), so kills land around compactions too, and the last, fault-point run below
              # reaches a compaction whatever batch the earlier kills left it at
              "--set", "streaming.pending_max_rows=30"]
    rng = random.Random(20261124)
    plan: list[tuple[str | None, float | None]] = [
        ("after_ingest_commit", None), ("between_feature_merges@2", None), (None, rng.uniform(8, 20)),
        ("before_checkpoint_commit", None), ("before_pending_compaction", None),
    ]
    for fault, after in plan:
        day = days.pop(0)
        day.rename(landing / day.name)  # an atomic drop
        proc = _start(["stream", "--trigger", "1s", *common], fault, log)
        try:
            if fault:
                returncode = proc.wait(timeout=300)
            else:
                time.sleep(after)
                _kill_group(proc)
                returncode = proc.wait(timeout=60)
        finally:
            _kill_group(proc)  # the JVM too
        assert returncode == -signal.SIGKILL, f"stream ended with {returncode} instead of being killed; see {log}"
    for day in days:
        day.rename(landing / day.name)
    drain = _start(["stream", "--available-now", *common], None, log)
    assert drain.wait(timeout=600) == 0, log.read_text()[-3000:]

    cfg = load_config(overrides=[f"home={home}"])
    lake = open_lake(spark, cfg, engine="delta-rs")
    events = lake.read("events")
    assert events.count() == manifest["valid_events"]
    assert events.select("event_id").distinct().count() == manifest["valid_events"]
    assert lake.read("events_quarantine").count() == manifest["bad"]
    incremental = {n: stored_states(lake, e, cfg.features) for n, e in entities(cfg.features).items()}
    scratch_cfg = load_config(overrides=[f"home={tmp_path / 'scratch'}"])
    scratch = open_lake(spark, scratch_cfg, engine="delta-rs")
    scratch.append(EVENTS_SPEC, events)
    run_refresh(spark, scratch, scratch_cfg)
    for name, entity in entities(cfg.features).items():
        assert_same_state(by_key(scratch.read(entity.table), entity), incremental[name], entity)
