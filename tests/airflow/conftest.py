"""Airflow tests run against a throw-away AIRFLOW_HOME, set before Airflow is first imported."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "airflow_dags"

_HOME = tempfile.mkdtemp(prefix="recsys-airflow-")
os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "false"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "false"
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
if str(DAGS) not in sys.path:
    sys.path.insert(0, str(DAGS))  # the DAG folder is on sys.path in Airflow too (recsys_common)


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[str]:
    """``airflow db migrate`` into the temporary AIRFLOW_HOME."""
    pytest.importorskip("airflow", reason="Airflow is not installed")
    airflow = Path(sys.executable).parent / "airflow"
    proc = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, timeout=600,
                          env=os.environ.copy(), check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    yield _HOME


@pytest.fixture(scope="session")
def dagbag():
    """Every DAG in airflow_dags/, parsed the way the scheduler parses them."""
    pytest.importorskip("airflow", reason="Airflow is not installed")
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))
