"""The stream and the full refresh at any interleaving: each event counted exactly once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from recsys_lib.features import entities
from recsys_lib.ingest.commit import ingest_frame
from recsys_lib.ingest.validate import read_raw
from recsys_lib.pipelines.features import run_refresh
from recsys_lib.streaming.microbatch import covered_events_version, update_features
from tests.spark.helpers import assert_same_state, by_key, pending_rows, raw_line, stored_states, write_lines

pytestmark = pytest.mark.spark
NOW = datetime(2024, 6, 1, tzinfo=UTC)


def _ingest(spark, lake, cfg, folder, batch_id):
    return ingest_frame(spark, lake, cfg, read_raw(spark, str(folder)), run_id=f"t-{batch_id}", source="test",
                        now=NOW, app_id="stream-t", batch_id=batch_id)


def _assert_equals_full_refresh(spark, lake, cfg, tmp_path):
    """Current tables must equal a full refresh over all events (written to a scratch lake)."""
    from recsys_lib.core.config import load_config
    from recsys_lib.lake import open_lake

    incremental = {n: stored_states(lake, e, cfg.features) for n, e in entities(cfg.features).items()}
    scratch_cfg = load_config(overrides=[f"home={tmp_path / 'scratch'}"])
    scratch = open_lake(spark, scratch_cfg, engine="delta-rs")
    from recsys_lib.ingest.commit import EVENTS_SPEC

    scratch.append(EVENTS_SPEC, lake.read("events"))
    run_refresh(spark, scratch, scratch_cfg)
    for name, entity in entities(cfg.features).items():
        assert_same_state(by_key(scratch.read(entity.table), entity), incremental[name], entity)


def _user(lake, cfg, user):
    return stored_states(lake, entities(cfg.features)["user"], cfg.features).get((user,))


@pytest.fixture
def drops(tmp_path):
    write_lines(tmp_path / "d0", "a.jsonl", [raw_line("e1", "u1", "view", "2024-01-01T10:00:00Z"),
                                        raw_line("e2", "u2", "click", "2024-01-01T11:00:00Z", "i2", "c2")])
    write_lines(tmp_path / "d1", "b.jsonl", [raw_line("e3", "u1", "purchase", "2024-01-01T12:00:00Z", price=3.0),
                                        raw_line("e4", "u3", "view", "2024-01-01T09:00:00Z", "i3", "c1")])
    return tmp_path / "d0", tmp_path / "d1"


def test_refresh_landing_between_append_and_merge_is_not_double_counted(spark, lake, cfg, tmp_path, drops):
    _ingest(spark, lake, cfg, drops[0], 0)
    update_features(spark, lake, cfg, now=NOW)
    _ingest(spark, lake, cfg, drops[1], 1)
    run_refresh(spark, lake, cfg)                        # covers batch 1 already
    tables = update_features(spark, lake, cfg, now=NOW)  # the stream's merge of batch 1 comes late
    assert all(t["skipped"] for t in tables.values())
    assert _user(lake, cfg, "u1")["view_count"] == 1
    _assert_equals_full_refresh(spark, lake, cfg, tmp_path)


def test_refresh_from_an_older_events_version_loses_nothing(spark, lake, cfg, tmp_path, drops):
    _ingest(spark, lake, cfg, drops[0], 0)
    old_version = lake.version("events")
    update_features(spark, lake, cfg, now=NOW)
    _ingest(spark, lake, cfg, drops[1], 1)
    update_features(spark, lake, cfg, now=NOW)
    run_refresh(spark, lake, cfg, events_version=old_version)  # read before batch 1, committed after it
    assert covered_events_version(lake, "user_features") == old_version
    assert _user(lake, cfg, "u3") is None  # batch 1 not in the refresh
    tables = update_features(spark, lake, cfg, now=NOW)         # the next micro-batch refolds the gap
    assert not tables["user_features"]["skipped"]
    _assert_equals_full_refresh(spark, lake, cfg, tmp_path)


def test_refresh_committing_during_a_merge_forces_a_recompute(spark, lake, cfg, tmp_path, drops, monkeypatch):
    _ingest(spark, lake, cfg, drops[0], 0)
    update_features(spark, lake, cfg, now=NOW)
    _ingest(spark, lake, cfg, drops[1], 1)
    refreshed = []
    lock = threading.Lock()  # the tables merge concurrently: every commit waits for the one refresh

    def after_a_concurrent_refresh(real):
        def replace(*args, **kwargs):
            with lock:
                if not refreshed:
                    refreshed.append(True)
                    run_refresh(spark, lake, cfg)  # lands after the stream computed its merge, before it commits
            return real(*args, **kwargs)
        return replace

    # the Spark engine commits through replace_partitions, the driver-local one through its Arrow twin
    for name in ("replace_partitions", "replace_partitions_arrow"):
        monkeypatch.setattr(lake, name, after_a_concurrent_refresh(getattr(lake, name)))
    tables = update_features(spark, lake, cfg, now=NOW)
    monkeypatch.undo()
    assert refreshed
    # the refresh covered batch 1, so the recomputed merge finds nothing left to fold
    assert all(t["skipped"] for t in tables.values()), tables
    assert _user(lake, cfg, "u1")["purchase_count"] == 1
    _assert_equals_full_refresh(spark, lake, cfg, tmp_path)


def test_maintenance_between_batches_keeps_every_count(spark, lake, cfg, tmp_path, drops):
    from recsys_lib.pipelines.maintenance import lake_tables, run_maintenance

    _ingest(spark, lake, cfg, drops[0], 0)
    update_features(spark, lake, cfg, now=NOW)
    assert pending_rows(lake, entities(cfg.features)["user"]) == 2
    report = run_maintenance(lake, retention_hours=0, cfg=cfg)
    assert {"events", "events_quarantine", "user_features", "item_features"} <= set(lake_tables(lake))
    features = [e.table for e in entities(cfg.features).values()]
    assert set(report) == set(lake_tables(lake)) | {f"published/{t}" for t in features}
    assert all(report[f"published/{t}"]["published"]["published"] for t in features)  # first publish of each
    assert report["user_features"]["pending_folded"] is True and report["events"]["pending_folded"] is None
    assert pending_rows(lake, entities(cfg.features)["user"]) == 0
    _ingest(spark, lake, cfg, drops[1], 1)
    update_features(spark, lake, cfg, now=NOW)
    assert lake.read("events").count() == 4
    _assert_equals_full_refresh(spark, lake, cfg, tmp_path)
