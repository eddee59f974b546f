"""DAG integrity: imports, policies and the expected task graphs (no task runs)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.airflow.conftest import DAGS

pytestmark = pytest.mark.airflow

EXPECTED = {
    "recsys_daily": [("ingest", "features_refresh"), ("features_refresh", "training_set"), ("training_set", "train"),
                     ("train", "evaluate"), ("evaluate", "promote"), ("promote", "export_index"),
                     ("export_index", "batch_recommendations"), ("batch_recommendations", "maintenance")],
    "recsys_incremental": [("stream_catch_up", "update_model")],
    "recsys_streaming_watchdog": [("check_stream", "restart_stream"), ("check_stream", "healthy")],
}


def test_dagbag_has_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(EXPECTED) <= set(dagbag.dag_ids)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_policies(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.catchup is False
    assert dag.tags and "recsys" in dag.tags
    assert dag.doc_md and dag_id in dag.doc_md
    assert dag.max_active_runs == 1
    for t in dag.tasks:
        assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"
        assert t.execution_timeout is not None, f"{dag_id}.{t.task_id} has no timeout"


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_task_graph(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    edges = {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}
    assert edges == set(EXPECTED[dag_id])


def test_spark_tasks_use_the_recsys_jobs_and_connection(dagbag):
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    dag = dagbag.dags["recsys_daily"]
    for t in dag.tasks:
        assert isinstance(t, SparkSubmitOperator)
        assert t.application.endswith(".py") and "/jobs/" in t.application
        assert t._conn_id == "recsys_spark"
        assert t.application_args[:4] == ["--conf", "{{ params.conf_file }}", "--set", "home={{ params.home }}"]


def test_parsing_does_no_work():
    """Importing every DAG file must not import Spark, TensorFlow, MLflow or the pipelines (the scheduler parses often).

    No timing is asserted (timed tests flake on a shared machine): importing no heavy module is what keeps it fast.
    """
    code = (
        f"import sys; sys.path.insert(0, {str(DAGS)!r})\n"
        "import recsys_daily, recsys_incremental, recsys_streaming_watchdog\n"
        "print([m for m in ('pyspark', 'tensorflow', 'mlflow', 'recsys_lib.pipelines') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout
