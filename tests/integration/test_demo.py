"""`recsys demo` (what `make demo` runs) works end to end on a small sample."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.spark]


def test_demo_runs_end_to_end(tmp_path):
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "RECSYS_HOME": str(tmp_path / "data")}
    proc = subprocess.run([str(Path(sys.executable).with_name("recsys")), "demo", "--events", "5000",
                           "--set", "spark.driver_memory=1g"], env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert step in out
    assert "balanced       yes" in out and "valid (new)           5,000" in out
    assert (tmp_path / "data" / "lake" / "user_features" / "_delta_log").is_dir()
    assert (tmp_path / "data" / "lake" / "training_examples" / "_delta_log").is_dir()
