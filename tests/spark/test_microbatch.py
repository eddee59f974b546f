"""Micro-batches as plain batch calls: incremental equals full refresh; a replayed batch id is skipped.

Run with the pending layer kept (the default threshold) and compacted after every batch (0)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pyspark.sql import functions as F

from recsys_lib.features import entities
from recsys_lib.ingest.validate import read_raw
from recsys_lib.pipelines.features import run_refresh
from recsys_lib.streaming.microbatch import process_batch
from tests.spark.helpers import assert_same_state, by_key, pending_rows, raw_line, stored_states, write_lines

pytestmark = pytest.mark.spark
NOW = datetime(2024, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(("pending_max_rows", "engine"), [(250_000, "local"), (0, "local"), (250_000, "spark")],
                         ids=["pending-kept", "compact-every-batch", "spark-engine"])
def test_batches_then_refresh_agree_and_replays_are_skipped(spark, lake, cfg, tmp_path, pending_max_rows, engine):
    streaming = {"pending_max_rows": pending_max_rows, "local_max_events": 200_000 if engine == "local" else 0}
    cfg = cfg.model_copy(update={"streaming": cfg.streaming.model_copy(update=streaming)})
    b0 = [raw_line("e1", "u1", "view", "2024-01-01T10:00:00Z"), raw_line("e2", "u1", "click", "2024-01-01T10:05:00Z"),
          raw_line("e3", "u2", "view", "2024-01-01T09:00:00Z", "i2", "c2", 4.5), "garbage"]
    b1 = [raw_line("e4", "u1", "purchase", "2024-01-01T10:30:00Z", price=9.5),
          raw_line("e0", "u1", "view", "2024-01-01T08:00:00Z", "i3", "c2"),  # late, out of order
          raw_line("e2", "u1", "click", "2024-01-01T10:05:00Z")]               # duplicate of batch 0
    write_lines(tmp_path / "b0", "a.jsonl", b0)
    write_lines(tmp_path / "b1", "b.jsonl", b1)
    r0 = process_batch(spark, lake, cfg, read_raw(spark, str(tmp_path / "b0")), query="q", batch_id=0, now=NOW)
    r1 = process_batch(spark, lake, cfg, read_raw(spark, str(tmp_path / "b1")), query="q", batch_id=1, now=NOW)
    assert (r0.new_events, r0.quarantined, r1.new_events, r1.duplicates) == (3, 1, 2, 1)
    assert 0 <= r1.freshness_lag_min_s <= r1.freshness_lag_max_s < 600
    assert {info["engine"] for info in r1.tables.values()} == {engine}
    versions = {t: lake.version(t) for t in ("events", "user_features", "item_features")}
    replay = process_batch(spark, lake, cfg, read_raw(spark, str(tmp_path / "b1")), query="q", batch_id=1, now=NOW)
    assert all(info["skipped"] for info in replay.tables.values())
    assert {t: lake.version(t) for t in versions} == versions

    users = entities(cfg.features)["user"]
    # u1 and u2 are pending after two batches (2 rows), or all in the base buckets when compacted
    assert pending_rows(lake, users) == (2 if pending_max_rows else 0)
    incremental = {name: stored_states(lake, e, cfg.features) for name, e in entities(cfg.features).items()}
    run_refresh(spark, lake, cfg)
    for name, entity in entities(cfg.features).items():
        assert_same_state(by_key(lake.read(entity.table), entity), incremental[name], entity)
    u1 = incremental["user"][("u1",)]
    assert (u1["view_count"], u1["click_count"], u1["purchase_count"]) == (2, 1, 1)

    # after the refresh u1 has a base row; a new view lands in the pending layer and reads merge the two
    write_lines(tmp_path / "b2", "c.jsonl", [raw_line("e5", "u1", "view", "2024-01-01T11:00:00Z")])
    process_batch(spark, lake, cfg, read_raw(spark, str(tmp_path / "b2")), query="q", batch_id=2, now=NOW)
    assert pending_rows(lake, users) == (1 if pending_max_rows else 0)
    assert lake.read(users.table).count() == (3 if pending_max_rows else 2)
    u1 = stored_states(lake, users, cfg.features)[("u1",)]
    assert (u1["view_count"], u1["purchase_count"]) == (3, 1)
    assert u1["view_decayed_1h"] == pytest.approx(2 ** -3 + 2 ** -1 + 1.0)  # views at 8:00, 10:00, 11:00


def test_an_event_python_cannot_represent_falls_back_to_spark(spark, lake, cfg, tmp_path, caplog):
    # year 0 is a valid timestamp for Spark but not for Python's datetime: the local validator hands the
    # line to Spark, and the item table's local fold cannot hold it (i0's latest values are Python values),
    # so that table folds this batch with Spark; the user table's lists are built in Arrow, which holds
    # year 0, so it stays local; nothing is lost
    lines = [raw_line("y0", "u0", "view", "0000-06-01T00:00:00Z", item="i0"),
             raw_line("y1", "u1", "view", "2024-01-01T10:00:00Z")]
    write_lines(tmp_path / "y", "a.jsonl", lines)
    report = process_batch(spark, lake, cfg, read_raw(spark, str(tmp_path / "y")), query="q", batch_id=0, now=NOW)
    assert (report.new_events, report.quarantined) == (2, 0)
    assert report.ingest_engine == "local"
    assert report.tables["item_features"]["engine"] == "spark"
    assert report.tables["user_features"]["engine"] == "local"
    # the fallback is counted in the batch's report, with its cause, and logged at WARNING
    assert len(report.fallbacks) == 1 and "driver-local fold into item_features" in report.fallbacks[0]
    assert any(r.levelname == "WARNING" and "item_features" in r.getMessage() for r in caplog.records)
    users = lake.read("user_features").select("user_id", "view_count", F.year(F.col("as_of")).alias("y")).collect()
    assert sorted((r["user_id"], r["view_count"], r["y"]) for r in users) == [("u0", 1, 0), ("u1", 1, 2024)]
    items = lake.read("item_features").select("item_id", "view_count").collect()
    assert sorted((r["item_id"], r["view_count"]) for r in items) == [("i0", 1), ("i1", 1)]


def test_a_refresh_until_t_leaves_the_later_events_to_the_stream(spark, lake, cfg, tmp_path):
    # events at 10:00, 11:00 and 12:00; a refresh --until 11:00 folds the first two only. The stream must
    # still fold 12:00 (it is in an events version the refresh read), then a new 13:00 event: the result
    # equals a full refresh (before the fix, 12:00 was marked covered and never counted)
    write_lines(tmp_path / "b0", "a.jsonl", [raw_line(f"e{h}", "u1", "view", f"2024-01-01T{h}:00:00Z")
                                             for h in (10, 11, 12)])
    process_batch(spark, lake, cfg, read_raw(spark, str(tmp_path / "b0")), query="q", batch_id=0, now=NOW)
    run_refresh(spark, lake, cfg, until=datetime(2024, 1, 1, 11, tzinfo=UTC))
    users = entities(cfg.features)["user"]
    assert stored_states(lake, users, cfg.features)[("u1",)]["view_count"] == 2  # the cut-off was applied
    write_lines(tmp_path / "b1", "b.jsonl", [raw_line("e13", "u1", "view", "2024-01-01T13:00:00Z")])
    report = process_batch(spark, lake, cfg, read_raw(spark, str(tmp_path / "b1")), query="q", batch_id=1, now=NOW)
    assert {t["engine"] for t in report.tables.values()} == {"spark"}  # the one-off fold of the left-out events
    incremental = {name: stored_states(lake, e, cfg.features) for name, e in entities(cfg.features).items()}
    assert incremental["user"][("u1",)]["view_count"] == 4
    run_refresh(spark, lake, cfg)
    for name, entity in entities(cfg.features).items():
        assert_same_state(by_key(lake.read(entity.table), entity), incremental[name], entity)
    # and the next batch is an ordinary one again (no cut-off left behind)
    write_lines(tmp_path / "b2", "c.jsonl", [raw_line("e14", "u1", "view", "2024-01-01T14:00:00Z")])
    report = process_batch(spark, lake, cfg, read_raw(spark, str(tmp_path / "b2")), query="q", batch_id=2, now=NOW)
    assert {t["engine"] for t in report.tables.values()} == {"local"}
    assert stored_states(lake, users, cfg.features)[("u1",)]["view_count"] == 5


def test_a_refresh_until_t_is_completed_even_without_new_events(spark, lake, cfg, tmp_path):
    write_lines(tmp_path / "b0", "a.jsonl", [raw_line(f"e{h}", "u1", "view", f"2024-01-01T{h}:00:00Z")
                                             for h in (10, 12)])
    process_batch(spark, lake, cfg, read_raw(spark, str(tmp_path / "b0")), query="q", batch_id=0, now=NOW)
    run_refresh(spark, lake, cfg, until=datetime(2024, 1, 1, 11, tzinfo=UTC))
    from recsys_lib.streaming.microbatch import update_features

    tables = update_features(spark, lake, cfg, now=NOW, batch_id=None)  # what the next (empty) batch does
    assert not any(t["skipped"] for t in tables.values())
    users = entities(cfg.features)["user"]
    assert stored_states(lake, users, cfg.features)[("u1",)]["view_count"] == 2
