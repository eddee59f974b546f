"""``dag.test()`` of recsys_daily end to end on a generated sample, with real spark-submit calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsys_lib.datagen.synthetic import GeneratorSpec, generate
from tests.airflow.conftest import REPO

pytestmark = [pytest.mark.airflow, pytest.mark.slow]


def test_recsys_daily_runs_end_to_end(airflow_db, dagbag, tmp_path):
    from airflow.utils.state import DagRunState

    landing, home = tmp_path / "landing", tmp_path / "home"
    manifest = generate(GeneratorSpec(users=300, items=200, days=8, events=12_000, seed=5), landing)
    dag = dagbag.dags["recsys_daily"]
    for t in dag.tasks:
        t.retries = 0  # a failure should fail the test now, not after back-off
    run = dag.test(run_conf={"home": str(home), "input_dir": str(landing),
                             "conf_file": str(REPO / "conf" / "local.yaml")})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == DagRunState.SUCCESS, states
    assert set(states) == {t.task_id for t in dag.tasks}

    from recsys_lib.core.config import load_config
    from recsys_lib.lake.snapshot import snapshot

    cfg = load_config(overrides=[f"home={home}"])
    assert snapshot(cfg.table_uri("events")).rows == manifest.valid_events
    assert snapshot(cfg.table_uri("recommendations")).rows > 0
    reports = list((home / "reports").glob("*/evaluation.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert {"two_tower", "popularity", "cooccurrence", "als"} <= set(report["models"])
    assert (reports[0].parent / "recall_at_k.png").stat().st_size > 0
    assert (Path(cfg.home_dir) / "serving" / "current" / "meta.json").exists()
