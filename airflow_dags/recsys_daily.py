"""``recsys_daily``: the nightly batch pipeline, one spark-submit job per step."""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, chain
from recsys_common import recsys_dag, spark_job

DOC = """
### recsys_daily
Raw landing files → `events` → feature tables (full refresh) → point-in-time
training set → two-tower training (MLflow) → evaluation against the baselines →
promotion gate (a "no" keeps the champion) → export of the champion's ANN index → batch top-K recommendations
→ compaction and vacuum.

Every task is `spark-submit jobs/<job>.py` (see `jobs/README.md`) against the
connection in `RECSYS_SPARK_CONN_ID` (embedded default: `local[*]`). Params: `home`
(data root), `conf_file` (YAML overlay), `input_dir` (landing folder to ingest;
empty: the configured one), `label_types`.
"""

with recsys_dag(
    "recsys_daily",
    description="ingest, full-refresh features, train, evaluate, promote, export, recommend, maintain",
    schedule="0 2 * * *",
    params={"input_dir": Param("", type="string", description="landing folder to ingest (empty: ingest.landing_dir)"),
            "label_types": Param("purchase,add_to_cart,click", type="string")},
    tags=["batch", "training"],
    doc_md=DOC,
) as dag:
    chain(
        spark_job("ingest", "ingest_events", "--input", "{{ params.input_dir }}"),
        spark_job("features_refresh", "features_refresh"),
        spark_job("training_set", "training_set", "--label-types", "{{ params.label_types }}"),
        spark_job("train", "train_model", timeout=timedelta(hours=3)),
        spark_job("evaluate", "evaluate_model", "--report-json",
                  "{{ params.home }}/reports/{{ ds }}/evaluation.json", "--plot",
                  "{{ params.home }}/reports/{{ ds }}/recall_at_k.png"),
        # a "no" from the gate (exit 3 by default) is a normal outcome here: the export after it serves the
        # champion over today's items either way
        spark_job("promote", "promote_model", "--ok-if-not-promoted"),
        spark_job("export_index", "export_index"),
        spark_job("batch_recommendations", "batch_recommendations"),
        spark_job("maintenance", "maintain_tables"),
    )
