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
then runs one model update (`jobs/update_model.py`): the training set is rebuilt, the
champion warm-started on the newest days, the promotion gate run on the newest holdout,
and a new champion exported (`recsys serve` hot-swaps it). Updates run one at a time
(a lease); a worse model is never promoted.
"""

with recsys_dag(
    "recsys_incremental",
    description="available-now streaming catch-up, then one model update (warm start, gate, promote, export)",
    schedule="@hourly",
    tags=["incremental", "streaming", "training"],
    doc_md=DOC,
) as dag:
    chain(
        spark_job("stream_catch_up", "stream_features", "--available-now", timeout=timedelta(minutes=50)),
        spark_job("update_model", "update_model", timeout=timedelta(minutes=50)),
    )
