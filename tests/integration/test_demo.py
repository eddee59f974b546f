"""`recsys demo` (what `make demo` runs) works end to end on a small sample."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.spark]


@pytest.mark.timeout(1200)  # the whole demo: its subprocess alone may take up to 900 s
def test_demo_runs_end_to_end(tmp_path):
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "RECSYS_HOME": str(tmp_path / "data")}
    proc = subprocess.run([str(Path(sys.executable).with_name("recsys")), "demo", "--events", "20000",
                           "--stream-seconds", "15",
                           "--set", "spark.driver_memory=1g"], env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for step in range(1, 9):
        assert f"[{step}/8]" in out
    assert "balanced       yes" in out and "valid (new)          20,000" in out
    assert "registered 'recsys-two-tower' version 1" in out
    # the gate scored the same model on the same holdout as the comparison table, and with no champion yet
    # it promoted (a gate reading another model, metric or holdout prints another number)
    gate = re.search(r"(not promoted|promoted) version 1: no champion yet; candidate recall@50=([0-9.]+)", out)
    assert gate is not None, out[-3000:]
    lines = out.splitlines()
    header = next(line.split() for line in lines if line.strip().startswith("model ") and "recall@50" in line)
    row = next(line.split() for line in lines if line.strip().startswith("two_tower "))
    assert gate.group(1) == "promoted" and gate.group(2) == row[header.index("recall@50")], (gate.group(0), row)
    assert "two_tower" in out and "popularity" in out and "als" in out  # the comparison table
    assert out.count("top 5") >= 3 and "user" in out and "after:" in out
    assert "micro-batches" in out
    assert out.count("$ curl 'http://127.0.0.1:") == 2 and out.count("source model, model version 1") == 2, \
        out[-3000:]
    assert (tmp_path / "data" / "lake" / "user_features" / "_delta_log").is_dir()
    assert (tmp_path / "data" / "lake" / "training_examples" / "_delta_log").is_dir()
    assert (tmp_path / "data" / "lake" / "recommendations" / "_delta_log").is_dir()
    assert (tmp_path / "data" / "mlflow" / "mlflow.db").is_file()
