from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pyspark.sql import functions as F

from recsys_lib.datagen.synthetic import GeneratorSpec, generate
from recsys_lib.features import load_features
from recsys_lib.pipelines.features import FeatureRefreshError, run_refresh
from recsys_lib.pipelines.ingest import run_ingest

pytestmark = pytest.mark.spark


@pytest.fixture
def ingested(spark, lake, cfg, tmp_path):
    generate(GeneratorSpec(users=60, items=40, days=3, events=3_000, seed=21), tmp_path / "raw")
    run_ingest(spark, lake, cfg, str(tmp_path / "raw"), now=datetime(2024, 6, 1, tzinfo=UTC))
    return lake.read("events")


def test_refresh_builds_every_table_from_events(spark, lake, cfg, ingested):
    summary = run_refresh(spark, lake, cfg)
    users = lake.read("user_features")
    assert users.count() == ingested.select("user_id").distinct().count()
    assert lake.read("item_features").count() == ingested.where("item_id is not null").select(
        "item_id").distinct().count()
    assert lake.read("user_category_features").count() == ingested.where("category_id is not null").select(
        "user_id", "category_id").distinct().count()
    per_type = {r["event_type"]: r["count"] for r in ingested.groupBy("event_type").count().collect()}
    totals = users.agg(*[F.sum(f"{t}_count").alias(t) for t in per_type]).first().asDict()
    assert totals == per_type
    assert summary.watermark == ingested.agg(F.max("event_ts")).first()[0].replace(tzinfo=UTC).isoformat()
    meta = json.loads(lake.history("user_features", 1)[0]["recsys"])
    assert meta["events_version"] == lake.version("events") and meta["watermark"] == summary.watermark


def test_until_excludes_later_events_and_each_refresh_is_a_new_version(spark, lake, cfg, ingested):
    cut = datetime(2024, 1, 2, 12, tzinfo=UTC)
    first = run_refresh(spark, lake, cfg, until=cut)
    expected = ingested.where(F.col("event_ts") <= F.lit(cut).cast("timestamp")).count()
    users = lake.read("user_features")
    types = ("view", "click", "add_to_cart", "purchase", "search")
    counted = users.agg(sum(F.sum(f"{t}_count") for t in types)).first()[0]
    assert counted == expected
    assert users.agg(F.max("as_of")).first()[0] <= cut.replace(tzinfo=None)
    second = run_refresh(spark, lake, cfg)
    assert second.tables["user_features"]["version"] > first.tables["user_features"]["version"]
    old = load_features(spark, "user", cfg=cfg, version=first.tables["user_features"]["version"])
    assert old.agg(F.max("as_of")).first()[0] <= cut.replace(tzinfo=None)


def test_load_features_adds_read_time_columns(spark, lake, cfg, ingested):
    run_refresh(spark, lake, cfg)
    at = datetime(2024, 2, 1, tzinfo=UTC)
    items = load_features(spark, "item", at, cfg=cfg)
    row = items.orderBy(F.desc("view_count")).first()
    assert row["category_id"] is not None and row["distinct_users"] >= 1
    assert 0 < row["ctr"] < 1 and row["recency_seconds"] > 0
    with pytest.raises(ValueError, match="unknown feature entity 'shop'"):
        load_features(spark, "shop", cfg=cfg)


def test_refresh_without_events_is_a_clear_error(spark, lake, cfg):
    with pytest.raises(FeatureRefreshError, match="run `recsys ingest` first"):
        run_refresh(spark, lake, cfg)


def test_training_set_job_records_its_inputs(spark, lake, cfg, ingested):
    from recsys_lib.pipelines.training import run_training_set

    built = run_training_set(spark, lake, cfg, ["purchase", "add_to_cart"], None, None)
    table = lake.read("training_examples")
    expected = ingested.where("event_type in ('purchase', 'add_to_cart')").count()
    assert built["rows"] == table.count() == expected
    meta = json.loads(lake.history("training_examples", 1)[0]["recsys"])
    assert meta["events_version"] == lake.version("events") and meta["label_types"] == ["purchase", "add_to_cart"]
    with pytest.raises(ValueError, match=r"unknown event type\(s\) \['like'\]"):
        run_training_set(spark, lake, cfg, ["like"], None, None)


def test_a_refresh_that_dies_between_tables_leaves_readers_on_the_last_complete_one(spark, lake, cfg, ingested,
                                                                                   tmp_path, monkeypatch):
    from recsys_lib.features import entities
    from recsys_lib.features.layers import read_states
    from recsys_lib.lake import LakeError

    first = run_refresh(spark, lake, cfg)
    generate(GeneratorSpec(users=60, items=40, days=3, events=1_500, seed=22), tmp_path / "more")
    run_ingest(spark, lake, cfg, str(tmp_path / "more"), now=datetime(2024, 6, 1, tzinfo=UTC))
    overwrite, done = lake.overwrite, []

    def dies_after_the_first_table(spec, *args, **kwargs):
        if done:
            raise LakeError("simulated crash between the refresh's table commits")
        done.append(spec.name)
        return overwrite(spec, *args, **kwargs)

    monkeypatch.setattr(lake, "overwrite", dies_after_the_first_table)
    with pytest.raises(LakeError, match="simulated crash"):
        run_refresh(spark, lake, cfg)
    monkeypatch.undo()
    (half,) = done
    assert lake.version(half) > first.tables[half]["version"]  # that table holds the second refresh
    for entity in entities(cfg.features).values():  # every reader sees the first refresh, the half one too
        pinned = by_rows(read_states(lake, entity, cfg.features), entity)
        assert pinned == by_rows(lake.read(entity.table, version=first.tables[entity.table]["version"]), entity)
    newest = entities(cfg.features)
    half_entity = next(e for e in newest.values() if e.table == half)
    assert by_rows(lake.read(half), half_entity) != by_rows(lake.read(half, version=lake.version(half) - 1),
                                                           half_entity)  # the pin hid a real difference
    second = run_refresh(spark, lake, cfg)  # completed: the pin lifts
    for entity in entities(cfg.features).values():
        assert by_rows(read_states(lake, entity, cfg.features), entity) == by_rows(
            lake.read(entity.table, version=second.tables[entity.table]["version"]), entity)


def by_rows(df, entity):
    """Each key's stored counts (enough to tell two refreshes apart)."""
    counts = [c for c in df.columns if c.endswith("_count")]
    return {tuple(r[k] for k in entity.keys): tuple(r[c] for c in counts) for r in df.collect()}
