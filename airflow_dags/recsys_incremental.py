"""``recsys_incremental``: hourly catch-up for deployments without a continuous stream."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import chain
from recsys_common import recsys_dag, spark_job

DOC = """
### recsys_incremental
For deployments that run no continuous stream: `recsys stream --available-now`
folds everything that landed since the last run into `events` and the feature
tables (exactly-once through the stream's checkpoint and Delta app transactions),
then warm-starts the champion on the newest days and runs the promotion gate.
"""

with recsys_dag(
    "recsys_incremental",
    description="available-now streaming catch-up, warm-start model update, promotion gate",
    schedule="@hourly",
    tags=["incremental", "streaming", "training"],
    doc_md=DOC,
) as dag:
    chain(
        spark_job("stream_catch_up", "stream_features", "--available-now", timeout=timedelta(minutes=50)),
        spark_job("warm_start", "train_model", "--warm-start", timeout=timedelta(minutes=50)),
        spark_job("promote", "promote_model"),
    )
