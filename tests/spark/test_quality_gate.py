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
from recsys_lib.features import ITEM, USER, entities
from recsys_lib.features.definitions import BUCKET
from recsys_lib.features.generations import GENERATIONS_TABLE
from recsys_lib.features.layers import PENDING, as_pending, table_spec
from recsys_lib.features.quality import DQ_TABLE, DataQualityError, check_stream_batch, check_table
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
    # counted in one pass, one line per broken rule with its row count
    for expected in ("view_count: 1 row(s) break view_count_non_negative",
                     "click_decayed_1h: 1 row(s) break click_decayed_1h_at_most_count",
                     "as_of: 1 row(s) break as_of_not_in_future", "user_id: not unique (1 repeated)"):
        assert expected in text, text
    # then explained by pandera's checks
    for expected in ("pandera: view_count: greater_than_or_equal_to(0)",
                     "pandera: click_decayed_1h__over_click_count: less_than", "pandera: as_of: less_than_or_equal_to",
                     "unique"):
        assert expected in text, text
    assert "rows:" not in text and "null" not in text  # 41 rows against 40 is within max_row_change


def test_a_column_gone_null_fails_its_null_rate_once_the_table_is_large_enough(home):
    cfg, lake, _ = home
    entity = entities(cfg.features)[ITEM]
    items = lake.read(entity.table, version=lake.version(entity.table))
    nulled = items.withColumn("latest_category", F.lit(None).cast(items.schema["latest_category"].dataType))
    written = lake.overwrite(table_spec(entity), nulled)
    try:
        lenient = check_table(lake, entity, written.version, written.rows, cfg.dq)  # dq.min_rows 1000 > 30 rows
        small = cfg.dq.model_copy(update={"min_rows": 10})
        strict = check_table(lake, entity, written.version, written.rows, small)
        clean = check_table(lake, entity, written.version - 1, written.rows, small)
    finally:
        lake.overwrite(table_spec(entity), items)
    assert lenient.passed
    assert strict.failures == ["latest_category: 100.0% null, above dq.max_null_rate 90.0%"]
    assert clean.passed, clean.failures  # the refresh's own rows: every column under the bound


def test_the_stream_checks_every_nth_batch_and_records_a_broken_one_without_failing(home, caplog):
    cfg, lake, _ = home
    entity = entities(cfg.features)[USER]
    users = lake.read(entity.table, version=lake.version(entity.table))
    first = users.orderBy("user_id").limit(1).withColumn("purchase_spend", F.lit(-5.0))
    written = lake.replace_partitions(table_spec(entity), as_pending(first), BUCKET, [PENDING],
                                      read_version=lake.version(entity.table))
    try:
        skipped = check_stream_batch(lake, entity, cfg.dq, written.version, batch_id=cfg.dq.stream_every + 1)
        sampled = check_stream_batch(lake, entity, cfg.dq, written.version, batch_id=cfg.dq.stream_every * 2)
    finally:
        lake.overwrite(table_spec(entity), users)
    assert skipped is None
    assert (sampled["passed"], sampled["rows"]) == (False, 1)
    assert sampled["failures"] == ["purchase_spend: 1 row(s) break purchase_spend_non_negative (purchase_spend IS "
                                   "NULL OR purchase_spend >= 0)"]
    recorded = [r for r in lake.read_arrow(DQ_TABLE).to_pylist() if r["job"] == "stream"]
    assert [(r["run_id"], r["table"], r["passed"]) for r in recorded] == [
        (f"stream-batch-{cfg.dq.stream_every * 2}", entity.table, False)]
    assert any(r.levelname == "WARNING" and "break data-quality rules" in r.getMessage() for r in caplog.records)


def test_a_refresh_that_lost_most_users_is_not_published(spark, home):
    cfg, lake, _ = home
    generations = lake.version(GENERATIONS_TABLE)
    # the tables hold 30-100 rows; this test also checks the MLflow record
    small = cfg.model_copy(update={"dq": cfg.dq.model_copy(update={"min_rows": 10, "log_to_mlflow": True})})
    with pytest.raises(DataQualityError, match="more than 50% away from the") as err:
        run_refresh(spark, lake, small, until=datetime(2024, 1, 1, 1, tzinfo=UTC))  # the first hour only
    assert lake.version(GENERATIONS_TABLE) == generations  # no new manifest: readers stay on the last refresh
    failed = [r for r in lake.read_arrow(DQ_TABLE).to_pylist() if not r["passed"] and r["job"] == "features_refresh"]
    assert {r["table"] for r in failed} == {r.table for r in err.value.results if not r.passed}
    assert all(any(f.startswith("rows:") for f in json.loads(r["failures"])) for r in failed), failed

    import mlflow

    from recsys_lib.models import tracking

    tracking.configure(small)
    runs = mlflow.search_runs(experiment_names=[small.mlflow.experiment],
                              filter_string="run_name = 'dq-features_refresh'")
    assert len(runs) == 1 and runs["tags.dq_passed"][0] == "False"
    failed_tables = {r.table for r in err.value.results if not r.passed}
    assert {t for t in failed_tables if runs[f"metrics.{t}.passed"][0] == 0.0} == failed_tables
