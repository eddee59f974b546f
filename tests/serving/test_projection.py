"""The online store is an exact projection of the feature tables: refresh, stream batches, compaction."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from recsys_lib.features import entities, load_features
from recsys_lib.features.online import Projector, merged_state, sync, verify
from recsys_lib.features.read_local import finalise_state
from recsys_lib.lake import driver_lake
from recsys_lib.online import key_of, open_store
from tests.spark.helpers import assert_same_state, stored_states

pytestmark = [pytest.mark.serving, pytest.mark.spark]


def test_the_refresh_published_a_generation_that_verifies(served):
    store = open_store(served.cfg)
    assert served.refresh.online["generation"] == store.generation() >= 1
    compared, mismatches = verify(store, driver_lake(served.cfg), served.cfg)
    assert mismatches == [] and compared == sum(t["rows"] for t in served.refresh.tables.values())


def test_verify_reports_a_changed_and_a_missing_row(served, tmp_path):
    from recsys_lib.online import Layer

    cfg = served.cfg.model_copy(update={"online": served.cfg.online.model_copy(
        update={"sqlite_path": str(tmp_path / "copy.sqlite")})})
    store = open_store(cfg)
    from recsys_lib.features.online import load_generation

    load_generation(store, driver_lake(cfg), cfg)
    key = next(k for k, _ in store.scan("item_features"))
    store.write("item_features", Layer.BASE, [(key, b"\x91\xa0", None)], 10**6)
    store.delete_keys("user_features", [next(k for k, _ in store.scan("user_features"))])
    _, mismatches = verify(store, driver_lake(cfg), cfg)
    assert any(f"key={key!r} layer=base: differs" in m for m in mismatches)
    assert any("user_features" in m and "missing" in m for m in mismatches)


def test_read_time_features_equal_sparks(served, spark):
    """features.read_local (serving) and features.read (Spark) give the same read-time features."""
    store = open_store(served.cfg)
    at = datetime(2024, 1, 3, tzinfo=UTC)
    for name in ("user", "item", "user_category"):
        entity = entities(served.cfg.features)[name]
        spark_rows = {tuple(r[k] for k in entity.keys): r.asDict(recursive=True)
                      for r in load_features(spark, name, at, cfg=served.cfg).collect()}
        keys = sorted(spark_rows)
        rows = store.read(entity.table, [key_of(k) for k in keys])
        assert all(r is not None for r in rows)
        for key, row in zip(keys, rows, strict=True):
            mine = finalise_state(merged_state(entity, row), entity, served.cfg.features, at)
            want = spark_rows[key]
            for column in set(want) - {"features_at", "key_bucket", "users_hll", *entity.keys}:
                a, b = want[column], mine[column]
                if column == "category_weights":
                    a, b = a, dict(b)
                if column in ("top_categories",):
                    b = [dict(x) for x in b]
                if isinstance(a, float):
                    assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300), (name, key, column, a, b)
                elif isinstance(a, dict) and column == "category_weights":
                    assert a.keys() == b.keys() and all(math.isclose(a[c], b[c], rel_tol=1e-12) for c in a)
                elif isinstance(a, datetime):
                    assert a.replace(tzinfo=UTC) == b.astimezone(UTC), (name, key, column)
                elif column == "recent_items":
                    assert [(e["ts"].replace(tzinfo=UTC), e["event_id"], e["item_id"]) for e in a] == \
                        [(e["ts"], e["event_id"], e["item_id"]) for e in b]
                elif column in ("latest_category", "latest_price"):
                    assert (a["ts"].replace(tzinfo=UTC), a["event_id"], a["value"]) == \
                        (b["ts"], b["event_id"], b["value"])
                elif column == "top_categories":
                    assert [x["category_id"] for x in a] == [x["category_id"] for x in b]
                    assert all(math.isclose(x["weight"], y["weight"], rel_tol=1e-12) for x, y in zip(a, b))
                else:
                    assert a == b, (name, key, column, a, b)


def test_stream_batches_and_compaction_keep_the_store_exact(spark, tmp_path):
    """A copy of a lake: micro-batches write their touched rows; a compaction catches up; verify finds nothing."""
    from recsys_lib.core.config import load_config
    from recsys_lib.datagen.synthetic import GeneratorSpec
    from recsys_lib.features.layers import compact_pending
    from recsys_lib.lake import open_lake
    from recsys_lib.pipelines.data import run_generate
    from recsys_lib.pipelines.features import run_refresh
    from recsys_lib.pipelines.ingest import run_ingest
    from recsys_lib.streaming.microbatch import update_features

    cfg = load_config(overrides=[f"home={tmp_path / 'home'}", "spark.master=local[2]", "lake.retry_backoff=1ms"])
    lake = open_lake(spark, cfg, engine="delta-rs")
    run_generate(GeneratorSpec(users=40, items=30, days=2, events=1500, bad_fraction=0.0, seed=5),
                 tmp_path / "a")
    run_ingest(spark, lake, cfg, str(tmp_path / "a"))
    run_refresh(spark, lake, cfg)
    store = open_store(cfg)
    projector = Projector(store, lake, cfg)
    run_generate(GeneratorSpec(users=50, items=30, days=1, events=300, bad_fraction=0.0, seed=6,
                               start=datetime(2024, 1, 3).date()), tmp_path / "b")
    run_ingest(spark, lake, cfg, str(tmp_path / "b"))
    projector.events_committed()
    update_features(spark, lake, cfg, now=datetime.now(UTC), projector=projector)
    assert (projector.failures, projector.catch_ups) == (0, 0)  # the direct path: touched rows only
    assert verify(store, driver_lake(cfg), cfg)[1] == []
    run_generate(GeneratorSpec(users=50, items=30, days=1, events=300, bad_fraction=0.0, seed=7,
                               start=datetime(2024, 1, 4).date()), tmp_path / "c")
    run_ingest(spark, lake, cfg, str(tmp_path / "c"))
    update_features(spark, lake, cfg, now=datetime.now(UTC))  # no projector: the store misses a pending-only merge
    assert verify(store, driver_lake(cfg), cfg)[1] != []
    caught_up = sync(store, driver_lake(cfg), cfg)
    assert all("from_version" in t for t in caught_up["tables"].values())  # from the change feed, not a reload
    assert verify(store, driver_lake(cfg), cfg)[1] == []  # before: each changed key's base row was deleted
    for name in ("user", "item", "user_category"):  # readers merge the two layers as Spark's reader does
        entity = entities(cfg.features)[name]
        want = stored_states(lake, entity, cfg.features)
        rows = store.read(entity.table, [key_of(k) for k in want])
        assert sum(r.base is not None and r.pending is not None for r in rows) > 0  # both layers exercised
        got = {k: merged_state(entity, r) for k, r in zip(want, rows, strict=True)}
        assert_same_state(want, {k: _spark_shaped(v) for k, v in got.items()}, entity)
    newest = max(r["as_of"] for r in lake.read("user_features").select("as_of").collect())
    assert store.watermark() == int((newest.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC))
                                    / timedelta(microseconds=1))
    for entity in entities(cfg.features).values():
        compact_pending(lake, entity, cfg.features)
        projector.table_committed(entity.table)
    assert projector.catch_ups == 3
    assert verify(store, driver_lake(cfg), cfg)[1] == []
    bought = {(r["user_id"], r["item_id"]) for r in lake.read("events").where("event_type = 'purchase'")
              .select("user_id", "item_id").collect()}
    users = sorted({u for u, _ in bought})
    assert {(u, i) for u, items in store.purchases(users).items() for i in items} == bought


def _spark_shaped(state):
    """A merged online state shaped as Spark's ``Row.asDict(recursive=True)``: naive UTC times, maps as dicts."""
    def plain(value):
        if isinstance(value, datetime):
            return value.astimezone(UTC).replace(tzinfo=None)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value
    out = {k: plain(v) for k, v in state.items()}
    out["category_weights"] = dict(state["category_weights"]) if state.get("category_weights") is not None \
        else state.get("category_weights")
    return out
