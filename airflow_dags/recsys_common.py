"""Shared wiring for the recsys DAGs: task defaults, params and the spark-submit task factory.

Nothing here does work at import: it reads a few environment variables and builds
operator objects.

Deployment knobs (environment of the scheduler and workers):

* ``RECSYS_SPARK_CONN_ID`` (default ``recsys_spark``): the Spark connection. When no
  such connection is defined, an embedded default (``local[*]``) is provided through
  ``AIRFLOW_CONN_RECSYS_SPARK``, so the DAGs run out of the box on one machine.
  Define the connection (UI, env or secrets backend) to point at YARN, Kubernetes
  or a standalone master; its definition wins.
* ``RECSYS_JOBS_DIR`` (default: this repo's ``jobs/``): where the entry files are.
* ``RECSYS_PY_FILES`` (default: none): e.g. ``dist/recsys_lib.zip`` for clusters.
* ``RECSYS_HOME``: default for the ``home`` param (the data root).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Param

REPO = Path(__file__).resolve().parents[1]
CONN_ID = os.environ.get("RECSYS_SPARK_CONN_ID", "recsys_spark")
if CONN_ID == "recsys_spark":
    os.environ.setdefault("AIRFLOW_CONN_RECSYS_SPARK", json.dumps({"conn_type": "spark", "host": "local[*]"}))
JOBS_DIR = Path(os.environ.get("RECSYS_JOBS_DIR", str(REPO / "jobs")))
PY_FILES = os.environ.get("RECSYS_PY_FILES") or None
PYTHON = sys.executable

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "recsys",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(hours=1),
}

PARAMS = {
    "home": Param(os.environ.get("RECSYS_HOME", str(REPO / "data")), type="string",
                  description="data root (RECSYS_HOME): tables, checkpoints, MLflow"),
    "conf_file": Param(str(REPO / "conf" / "local.yaml"), type="string", description="recsys YAML config overlay"),
}

#: Arguments every job gets: the config overlay and the data root from the run's params.
COMMON_ARGS = ["--conf", "{{ params.conf_file }}", "--set", "home={{ params.home }}"]


def recsys_dag(dag_id: str, *, schedule: Any, description: str, tags: list[str], doc_md: str,
              params: dict[str, Any] | None = None, default_args: dict[str, Any] | None = None) -> DAG:
    """A DAG with the suite's policies: no catchup, one active run, retries, the common params."""
    return DAG(dag_id=dag_id, description=description, schedule=schedule, start_date=datetime(2024, 1, 1),
               catchup=False, max_active_runs=1, default_args={**DEFAULT_ARGS, **(default_args or {})},
               params={**PARAMS, **(params or {})}, tags=["recsys", *tags], doc_md=doc_md)


def spark_job(task_id: str, job: str, *args: str, timeout: timedelta | None = None,
              **kwargs: Any) -> SparkSubmitOperator:
    """A spark-submit task running ``jobs/<job>.py`` with the common arguments plus ``args``."""
    venv_bin = str(Path(PYTHON).parent)
    return SparkSubmitOperator(
        task_id=task_id,
        application=str(JOBS_DIR / f"{job}.py"),
        application_args=[*COMMON_ARGS, *args],
        conn_id=CONN_ID,
        py_files=PY_FILES,
        name=f"recsys-{task_id}",
        env_vars={"PYSPARK_PYTHON": PYTHON, "PYSPARK_DRIVER_PYTHON": PYTHON, "SPARK_LOCAL_IP": "127.0.0.1",
                  "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"},
        execution_timeout=timeout or DEFAULT_ARGS["execution_timeout"],
        **kwargs,
    )
