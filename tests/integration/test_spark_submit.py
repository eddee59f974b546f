"""The spark-submit line of docs/deploy.md on local-cluster[2,1,1024] through jobs/ and --py-files:
ingest, full refresh and training-set build give the same tables as the same pipelines on local[2].

local-cluster starts two executor JVMs with their own Python workers, which catches code that only
works when everything runs in the driver; the local[2] side runs in the test's own session."""

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
VENV_BIN = Path(sys.executable).parent
#: Columns that legitimately differ between runs (run ids, wall-clock times, file names).
VOLATILE = {"source_file", "ingest_run_id", "ingested_at", "updated_at"}
STEPS = [("ingest_events.py", ["--input", "{landing}", "--summary-json", "{home}/summary.json"]),
         ("features_refresh.py", []),
         ("training_set.py", ["--label-types", "purchase,add_to_cart,click"])]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}", "SPARK_LOCAL_IP": "127.0.0.1",
            "RECSYS_HOME": str(home)}


def _submit(archive: str, landing: Path, home: Path, cwd: Path) -> None:
    for job, args in STEPS:
        argv = [a.format(landing=landing, home=home) for a in args]
        proc = subprocess.run(
            [str(VENV_BIN / "spark-submit"), "--master", "local-cluster[2,1,1024]", "--py-files", archive,
             str(ROOT / "jobs" / job), *argv, "--set", "spark.driver_memory=1g"],
            env=_env(home), capture_output=True, text=True, timeout=900, check=False, cwd=cwd)
        assert proc.returncode == 0, f"{job}: {proc.stderr[-3000:]}"


def _local(spark, landing: Path, home: Path) -> None:
    """What `recsys ingest`, `features refresh` and `training-set build` run, in this session (local[2])."""
    from recsys_lib.core.config import load_config
    from recsys_lib.lake import open_lake
    from recsys_lib.pipelines.features import run_refresh
    from recsys_lib.pipelines.ingest import run_ingest
    from recsys_lib.pipelines.training import run_training_set

    cfg = load_config(overrides=[f"home={home}"])
    lake = open_lake(spark, cfg)
    run_ingest(spark, lake, cfg, str(landing))
    run_refresh(spark, lake, cfg)
    run_training_set(spark, lake, cfg, ["purchase", "add_to_cart", "click"])


def test_spark_submit_on_local_cluster_equals_local_mode(spark, tmp_path, shared_id_key):
    from recsys_lib.core.config import load_config
    from recsys_lib.lake import open_lake

    landing = tmp_path / "landing"
    generate(GeneratorSpec(users=80, items=50, days=4, events=3_000, seed=3), landing)
    manifest = json.loads((landing / "_manifest.json").read_text())
    archive = shutil.make_archive(str(tmp_path / "recsys_lib"), "zip", ROOT, "recsys_lib")
    _submit(archive, landing, tmp_path / "cluster", tmp_path)
    _local(spark, landing, tmp_path / "local")
    summary = json.loads((tmp_path / "cluster" / "summary.json").read_text())
    assert summary["balanced"] and summary["valid"] == manifest["valid_events"]
    assert summary["input_records"] == manifest["lines"]

    def table(home: Path, name: str):
        return open_lake(spark, load_config(overrides=[f"home={home}"]), engine="delta-rs").read(name)

    for name in ("events", "events_quarantine", "user_features", "item_features", "user_category_features",
                 "training_examples"):
        a, b = table(tmp_path / "cluster", name), table(tmp_path / "local", name)
        cols = [c for c in a.columns if c not in VOLATILE]
        # exact equality except floating-point sums, which may be added in a different order
        a = _rounded(a.select(*cols))
        b = _rounded(b.select(*cols))
        assert a.count() == b.count() > 0, name
        if a.exceptAll(b).count() or b.exceptAll(a).count():
            differing = [c for c in cols if c != "event_id" and "event_id" in cols
                         and a.select("event_id", c).exceptAll(b.select("event_id", c)).count()]
            pytest.fail(f"{name}: local-cluster and local[2] rows differ; columns: {differing or 'unknown'}")


def _rounded(df):
    """Doubles rounded to 9 places (also inside maps and arrays of structs); maps sorted; HLL sketches estimated."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    def norm(col, dt):
        if isinstance(dt, T.DoubleType):
            return F.round(col, 9)
        if isinstance(dt, T.MapType):
            return F.array_sort(F.transform(F.map_entries(col), lambda e: F.struct(
                e["key"].alias("key"), norm(e["value"], dt.valueType).alias("value"))))
        if isinstance(dt, T.StructType):
            return F.struct(*[norm(col[f.name], f.dataType).alias(f.name) for f in dt.fields])
        if isinstance(dt, T.ArrayType) and isinstance(dt.elementType, (T.StructType, T.DoubleType)):
            return F.transform(col, lambda x: norm(x, dt.elementType))
        if isinstance(dt, T.BinaryType):
            return F.hll_sketch_estimate(col)
        return col

    return df.select(*[norm(F.col(f.name), f.dataType).alias(f.name) for f in df.schema.fields])
