"""``recsys forget``: a planted person is erased from every table's files and log, and from the online store;
features equal a refresh without them; later events are dropped until the tombstone is lifted."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from recsys_lib.core.config import load_config
from recsys_lib.core.privacy import KEY_ENV, audit_digests, stored_id
from recsys_lib.datagen.synthetic import GeneratorSpec, generate
from recsys_lib.lake import open_lake
from recsys_lib.pipelines.features import run_refresh
from recsys_lib.pipelines.forget import lift, run_forget
from recsys_lib.pipelines.ingest import run_ingest
from recsys_lib.pipelines.training import run_training_set
from recsys_lib.streaming.job import run_stream
from tests.faults.helpers import assert_features_match_recomputation
from tests.spark.helpers import files_holding, raw_line, write_lines

pytestmark = pytest.mark.spark
PLANTED = "planted.person+7f3a9c@shop.example"


def _planted_events(folder: Path, name: str, first: int) -> Path:
    write_lines(folder, name, [raw_line(f"p{first + n}", PLANTED, etype, f"2024-01-02T1{n}:00:00Z", f"i{n}", "c1",
                                        2.0 if etype == "purchase" else None)
                               for n, etype in enumerate(["view", "click", "purchase"])]
                + [raw_line(f"o{first}", "u1", "view", "2024-01-02T10:30:00Z", "i1", "c1")])
    return folder


def test_forget_erases_a_person_everywhere_it_reaches(spark, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "forget-test-key-0123456789-0123456789")
    cfg = load_config(overrides=[f"home={tmp_path / 'home'}", "spark.master=local[2]", "lake.retry_backoff=1ms",
                                 f"streaming.checkpoint_dir={tmp_path / 'checkpoint'}"])
    lake = open_lake(spark, cfg)
    landing = tmp_path / "landing"
    generate(GeneratorSpec(users=40, items=30, days=2, events=1500, bad_fraction=0.0, seed=4), landing / "a")
    _planted_events(landing / "a" / "date=2024-01-02", "planted.jsonl", 0)
    run_ingest(spark, lake, cfg, str(landing / "a"))
    run_refresh(spark, lake, cfg)  # also loads the online store (SQLite)
    run_training_set(spark, lake, cfg, ["purchase", "add_to_cart", "click"])
    pseudonym = stored_id(cfg, PLANTED)
    lake_root, store_file = Path(cfg.lake_root), Path(cfg.home_dir) / "online" / "features.sqlite"
    # the scan can find it
    assert files_holding(lake_root, [pseudonym]) and files_holding(store_file.parent, [pseudonym])
    assert not files_holding(lake_root, [PLANTED])  # pseudonyms from the edge on

    done = run_forget(spark, lake, cfg, [PLANTED])
    assert done.rows_deleted["events"] == 3 and done.rows_deleted["training_examples"] > 0
    assert done.online_removed > 0 and done.files_removed > 0
    assert files_holding(lake_root, [PLANTED, pseudonym]) == []
    assert files_holding(store_file.parent, [PLANTED, pseudonym]) == []
    logged = lake.read("forget_log").collect()
    assert [r["digest"] for r in logged] == [audit_digests(cfg).of(pseudonym)]
    assert "events" in json.loads(logged[0]["rows_deleted"])

    again = run_forget(spark, lake, cfg, [PLANTED])  # a re-run (as after a kill) finds nothing left
    assert again.rows_deleted["events"] == 0

    # later events of the person are dropped at ingest, by the stream too; the stream goes on from the
    # refresh's coverage (carried across the purge): its result still equals a full refresh
    reports = run_stream(spark, lake, cfg, str(_planted_events(landing / "b", "late.jsonl", 10)), available_now=True)
    assert sum(r["forgotten"] for r in reports) == 3 and sum(r["new_events"] for r in reports) == 1
    assert_features_match_recomputation(spark, lake, cfg, tmp_path / "refreshed")
    assert files_holding(lake_root, [PLANTED, pseudonym]) == []

    assert lift(cfg, [PLANTED]) == 1
    summary = run_ingest(spark, lake, cfg, str(_planted_events(landing / "c", "back.jsonl", 20)),
                         now=datetime(2024, 1, 3, tzinfo=UTC))
    assert (summary.forgotten, summary.valid) == (0, 4)
