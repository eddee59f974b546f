"""Micro-batches as plain batch calls: incremental equals full refresh; a replayed batch id is skipped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from recsys_lib.features import entities
from recsys_lib.ingest.validate import read_raw
from recsys_lib.pipelines.features import run_refresh
from recsys_lib.streaming.microbatch import process_batch
from tests.spark.helpers import assert_same_state, by_key, raw_line, write_lines

pytestmark = pytest.mark.spark
NOW = datetime(2024, 6, 1, tzinfo=UTC)


def test_batches_then_refresh_agree_and_replays_are_skipped(spark, lake, cfg, tmp_path):
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
    versions = {t: lake.version(t) for t in ("events", "user_features", "item_features")}
    replay = process_batch(spark, lake, cfg, read_raw(spark, str(tmp_path / "b1")), query="q", batch_id=1, now=NOW)
    assert all(info["skipped"] for info in replay.tables.values())
    assert {t: lake.version(t) for t in versions} == versions

    incremental = {name: by_key(lake.read(e.table), e) for name, e in entities(cfg.features).items()}
    run_refresh(spark, lake, cfg)
    for name, entity in entities(cfg.features).items():
        assert_same_state(by_key(lake.read(entity.table), entity), incremental[name], entity)
    u1 = incremental["user"][("u1",)]
    assert (u1["view_count"], u1["click_count"], u1["purchase_count"]) == (2, 1, 1)
