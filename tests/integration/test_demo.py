"""`recsys demo` (what `make demo` runs) works end to end on a small sample."""

from __future__ import annotations

import json
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

    # `recsys status --json` on the demo's home: every part read, and it agrees with the lake and the registry
    status = subprocess.run([str(Path(sys.executable).with_name("recsys")), "status", "--json"], env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert status.returncode == 0, status.stderr[-3000:]
    _check_status(json.loads(status.stdout), tmp_path / "data")
    _check_servable_model(tmp_path / "data", tmp_path)


def _check_status(report: dict, home: Path) -> None:
    import pyarrow as pa
    from deltalake import DeltaTable, QueryBuilder

    from recsys_lib.core.config import load_config
    from recsys_lib.models import tracking

    for name in ("events", "user_features", "item_features", "training_examples", "recommendations"):
        table = DeltaTable(str(home / "lake" / name))
        assert report["tables"][name]["version"] == table.version(), name
        counted = pa.table(QueryBuilder().register("t", table).execute("SELECT count(*) AS n FROM t").read_all())
        assert report["tables"][name]["rows"] == counted.column("n")[0].as_py(), name  # log statistics = a scan
        assert report["tables"][name]["age_s"] >= 0
    assert report["tables"]["events"]["rows"] >= 20_000  # the batch's events, then the stream's
    for name in ("user_features", "item_features", "user_category_features"):  # published after the refresh
        published, working = report["tables"][f"published/{name}"], report["tables"][name]
        assert 0 <= published["source_version"] <= working["version"], name
        assert published["behind"] == working["version"] - published["source_version"], name
        assert 0 < published["rows"] <= working["rows"], name  # no pending rows: at most the working table's
    cfg = load_config(overrides=[f"home={home}"])
    champion = tracking.model_version(tracking.configure(cfg), cfg.mlflow.registered_model, alias=tracking.CHAMPION)
    assert report["model"]["version"] == champion.version and 0 < report["model"]["metrics"]["recall@50"] <= 1
    assert report["index"]["model_version"] == champion.version and report["index"]["items"] > 0
    assert report["online"]["generation"] >= 1 and set(report["online"]["behind"].values()) == {0}
    assert report["stream"]["status"] == "dead" and report["stream"]["last_batch"]["batch_id"] >= 0


#: Loads the champion as MLflow pyfunc in a process that cannot import the installed ``recsys_lib``: site-packages
#: is on the path without its .pth files, so the editable install's finder is absent and only the model's own
#: ``code_paths`` copy can serve the import.
_LOAD_OUTSIDE = """
import importlib.util, json, sys
sys.path.append(sys.argv[2])
assert importlib.util.find_spec("recsys_lib") is None, "recsys_lib must come from the model, not the checkout"
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model("models:/recsys-two-tower@champion")
example = model.input_example
out = model.predict(example, params={"k": 3})
print(json.dumps({"inputs": list(model.metadata.get_input_schema().input_names()), "k": len(out["item_ids"][0]),
                  "rows": len(out)}), flush=True)
import os
os._exit(0)  # TensorFlow's and delta-rs's threads can abort the interpreter's teardown (seen once in 4 runs)
"""


def _check_servable_model(home: Path, tmp_path: Path) -> None:
    import sysconfig

    from mlflow.artifacts import download_artifacts

    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    proc = subprocess.run([sys.executable, "-S", "-c", _LOAD_OUTSIDE, uri, sysconfig.get_paths()["purelib"]],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded["k"] == 3 and loaded["rows"] == 1
    assert "user_id" in loaded["inputs"] and "u_recent_items" in loaded["inputs"]
    import mlflow

    mlflow.set_tracking_uri(uri)
    requirements = Path(download_artifacts(artifact_uri="models:/recsys-two-tower@champion/requirements.txt",
                                           dst_path=str(tmp_path / "req"))).read_text().split()
    assert "recsys" not in requirements  # an unrelated PyPI package of that name
    assert any(r.startswith("tensorflow-recommenders==") for r in requirements)
    assert any(r.startswith("tensorflow==") for r in requirements)
