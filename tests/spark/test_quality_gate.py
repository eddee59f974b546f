"""The refresh's data-quality gate: expectations on hand-broken rows, Delta CHECK constraints, and a
refresh that shrank too much stopping before it is published."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError
from pyspark.sql import functions as F

from recsys_lib.datagen.synthetic import GeneratorSpec, generate
from recsys_lib.features import USER, entities
from recsys_lib.features.generations import GENERATIONS_TABLE
from recsys_lib.features.layers import table_spec
from recsys_lib.features.quality import DQ_TABLE, DataQualityError, check_table
from recsys_lib.pipelines.features import run_refresh
from recsys_lib.pipelines.ingest import run_ingest

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def home(spark, tmp_path_factory):
    """One refreshed lake for the module (the tests run in order: read-only checks, then a failed refresh)."""
    from recsys_lib.core.config import load_config
    from recsys_lib.lake import open_lake

    root = tmp_path_factory.mktemp("dq")
    cfg = load_config(overrides=[f"home={root / 'home'}", "spark.master=local[2]", "lake.retry_backoff=1ms",
                                 "privacy.pseudonymize=false", "dq.enabled=true",
                                 "dq.log_to_mlflow=false"])
    lake = open_lake(spark, cfg, engine="delta-rs")
    generate(GeneratorSpec(users=40, items=30, days=3, events=1_500, seed=5), root / "raw")
    run_ingest(spark, lake, cfg, str(root / "raw"), now=datetime(2024, 6, 1, tzinfo=UTC))
    return cfg, lake, run_refresh(spark, lake, cfg)


def test_a_clean_refresh_passes_records_its_results_and_adds_the_constraints(home):
    cfg, lake, refreshed = home
    assert {(d["table"], d["passed"]) for d in refreshed.dq} == {
        ("user_category_features", True), ("item_features", True), ("user_features", True)}
    recorded = lake.read_arrow(DQ_TABLE).to_pylist()
    assert {(r["table"], r["version"], r["rows"], r["passed"]) for r in recorded} == {
        (t, info["version"], info["rows"], True) for t, info in refreshed.tables.items()}
    config = DeltaTable(lake.uri("user_features")).metadata().configuration
    assert config["delta.constraints.click_count_non_negative"] == "click_count IS NULL OR click_count >= 0"
    assert "click_decayed_1d <= click_count" in config["delta.constraints.click_decayed_1d_at_most_count"]

    # delta-rs enforces them on its own writes: a negative count is refused
    row = lake.read_arrow("user_features").slice(0, 1)
    bad = row.set_column(row.schema.get_field_index("click_count"), "click_count", pa.array([-3], pa.int64()))
    with pytest.raises(DeltaError, match="1 rows failed validation check"):
        write_deltalake(lake.uri("user_features"), bad, mode="append")


def test_broken_rows_fail_the_rule_they_break(home):
    cfg, lake, _ = home
    entity = entities(cfg.features)[USER]
    users = lake.read(entity.table, version=lake.version(entity.table))
    first, second, third = [r["user_id"] for r in users.orderBy("user_id").limit(3).collect()]
    broken = (users
              .withColumn("view_count", F.when(F.col("user_id") == first, F.lit(-1)).otherwise(F.col("view_count")))
              .withColumn("click_decayed_1h", F.when(F.col("user_id") == second, F.col("click_count") + 2.0)
                          .otherwise(F.col("click_decayed_1h")))
              .withColumn("as_of", F.when(F.col("user_id") == third, F.lit(datetime(2999, 1, 1)))
                          .otherwise(F.col("as_of")))
              .unionByName(users.where(F.col("user_id") == first)))  # a duplicated key
    written = lake.overwrite(table_spec(entity), broken)
    try:
        got = check_table(lake, entity, written.version, written.rows, cfg.dq)
    finally:  # the module's lake back to the refresh's rows
        lake.overwrite(table_spec(entity), users)
    assert not got.passed
    text = " | ".join(got.failures)
    for expected in ("view_count: greater_than_or_equal_to(0)", "click_decayed_1h__over_click_count: less_than",
                     "as_of: less_than_or_equal_to", "unique"):
        assert expected in text, text
    assert "rows" not in text  # 41 rows against 40 is within max_row_change


def test_a_refresh_that_lost_most_users_is_not_published(spark, home):
    cfg, lake, _ = home
    generations = lake.version(GENERATIONS_TABLE)
    # the tables hold 30-100 rows; this test also checks the MLflow record
    small = cfg.model_copy(update={"dq": cfg.dq.model_copy(update={"min_rows": 10, "log_to_mlflow": True})})
    with pytest.raises(DataQualityError, match="more than 50% away from the") as err:
        run_refresh(spark, lake, small, until=datetime(2024, 1, 1, 1, tzinfo=UTC))  # the first hour only
    assert lake.version(GENERATIONS_TABLE) == generations  # no new manifest: readers stay on the last refresh
    failed = [r for r in lake.read_arrow(DQ_TABLE).to_pylist() if not r["passed"]]
    assert {r["table"] for r in failed} == {r.table for r in err.value.results if not r.passed}
    assert all("rows:" in json.loads(r["failures"])[0] for r in failed)

    import mlflow

    from recsys_lib.models import tracking

    tracking.configure(small)
    runs = mlflow.search_runs(experiment_names=[small.mlflow.experiment],
                              filter_string="run_name = 'dq-features_refresh'")
    assert len(runs) == 1 and runs["tags.dq_passed"][0] == "False"
    failed_tables = {r.table for r in err.value.results if not r.passed}
    assert {t for t in failed_tables if runs[f"metrics.{t}.passed"][0] == 0.0} == failed_tables
