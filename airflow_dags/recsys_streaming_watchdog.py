"""``recsys_streaming_watchdog``: restart the continuous stream when it is dead or stale."""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Param, task
from recsys_common import recsys_dag

DOC = """
### recsys_streaming_watchdog
Every five minutes: read the stream's pid file and batch log under its checkpoint
(`recsys_lib.streaming.health`). Dead (no live driver) or stale (input waiting
longer than `max_lag_seconds`) → stop it and start `recsys stream` detached;
healthy → nothing.
"""


def _config(params: dict) -> object:
    from recsys_lib.core.config import load_config

    return load_config([params["conf_file"]], [f"home={params['home']}"])


with recsys_dag(
    "recsys_streaming_watchdog",
    description="check the stream's liveness and freshness lag; restart it when dead or stale",
    schedule=timedelta(minutes=5),
    default_args={"retries": 1, "execution_timeout": timedelta(minutes=4)},
    params={"max_lag_seconds": Param(120, type="integer", minimum=1)},
    tags=["streaming", "ops"],
    doc_md=DOC,
) as dag:

    @task.branch(task_id="check_stream")
    def check_stream(params: dict | None = None) -> str:
        """Branch to ``restart_stream`` unless the stream is healthy."""
        from recsys_lib.streaming.health import stream_health

        report = stream_health(_config(params or {}), float((params or {})["max_lag_seconds"]))  # type: ignore[arg-type]
        print(f"stream health: {report}")
        return "healthy" if report["status"] == "healthy" else "restart_stream"

    @task(task_id="restart_stream")
    def restart_stream(params: dict | None = None) -> int:
        """Stop the old driver and start a new detached ``recsys stream``."""
        from recsys_lib.streaming.health import restart_stream as restart

        p = params or {}
        return restart(_config(p), ["--conf", p["conf_file"], "--set", f"home={p['home']}"])  # type: ignore[arg-type]

    check_stream() >> [restart_stream(), EmptyOperator(task_id="healthy")]
