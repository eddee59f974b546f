"""The README's spark-submit line: --py-files zip on local-cluster[2,1,1024], through jobs/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_lib.datagen.synthetic import GeneratorSpec, generate

pytestmark = [pytest.mark.slow, pytest.mark.spark]
ROOT = Path(__file__).resolve().parents[2]


def test_spark_submit_ingest_on_local_cluster(tmp_path):
    generate(GeneratorSpec(users=50, items=40, days=2, events=1_500, seed=3), tmp_path / "landing")
    manifest = json.loads((tmp_path / "landing" / "_manifest.json").read_text())
    archive = shutil.make_archive(str(tmp_path / "recsys_lib"), "zip", ROOT, "recsys_lib")
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}", "SPARK_LOCAL_IP": "127.0.0.1",
           "RECSYS_HOME": str(tmp_path / "home")}
    summary = tmp_path / "summary.json"
    proc = subprocess.run(
        [str(Path(venv_bin) / "spark-submit"), "--master", "local-cluster[2,1,1024]", "--py-files", archive,
         str(ROOT / "jobs" / "ingest_events.py"), "--input", str(tmp_path / "landing"),
         "--summary-json", str(summary), "--set", "spark.driver_memory=1g"],
        env=env, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(summary.read_text())
    assert result["balanced"] and result["valid"] == manifest["valid_events"]
    assert result["input_records"] == manifest["lines"]
