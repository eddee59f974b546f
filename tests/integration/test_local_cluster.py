"""Ingest on a multi-process local cluster must give the same tables as local mode.

local-cluster[2,1,1024] starts two executor JVMs with their own Python workers,
which catches code that only works when everything runs in the driver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_lib.datagen.synthetic import GeneratorSpec, generate

pytestmark = [pytest.mark.slow, pytest.mark.spark]

RECSYS = str(Path(sys.executable).with_name("recsys"))
COLUMNS = ["event_id", "event_ts", "user_id", "event_type", "item_id", "category_id", "price", "quantity",
           "session_id", "query", "event_date"]


def _ingest(raw: Path, home: Path, master: str) -> dict:
    summary = home / "summary.json"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    proc = subprocess.run(
        [RECSYS, "ingest", "--input", str(raw), "--summary-json", str(summary), "--set", f"home={home}",
         "--set", f"spark.master={master}", "--set", "spark.driver_memory=1g"],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(summary.read_text())


def test_local_cluster_ingest_equals_local_mode(spark, tmp_path, shared_id_key):
    from recsys_lib.core.config import load_config
    from recsys_lib.lake import open_lake

    raw = tmp_path / "raw"
    generate(GeneratorSpec(users=300, items=200, days=3, events=8_000, bad_fraction=0.03, seed=9), raw)
    manifest = json.loads((raw / "_manifest.json").read_text())
    cluster = _ingest(raw, tmp_path / "cluster", "local-cluster[2,1,1024]")
    local = _ingest(raw, tmp_path / "local", "local[2]")
    for key in ("input_records", "valid", "quarantined", "duplicates", "quarantined_by_reason"):
        assert cluster[key] == local[key], key
    assert cluster["valid"] == manifest["valid_events"]
    assert cluster["input_records"] == manifest["lines"]

    def table(home: Path, name: str):
        return open_lake(spark, load_config(overrides=[f"home={home}"]), engine="delta-rs").read(name)

    a = table(tmp_path / "cluster", "events").select(*COLUMNS)
    b = table(tmp_path / "local", "events").select(*COLUMNS)
    assert a.count() == b.count() == manifest["valid_events"]
    assert a.exceptAll(b).count() == 0 and b.exceptAll(a).count() == 0
    qa = table(tmp_path / "cluster", "events_quarantine").select("record_key", "reason", "reason_field")
    qb = table(tmp_path / "local", "events_quarantine").select("record_key", "reason", "reason_field")
    assert qa.exceptAll(qb).count() == 0 and qb.exceptAll(qa).count() == 0
