"""Published feature tables: one row per key, and every table reads the same in DuckDB, Polars, delta-rs and Spark.

The working feature tables keep a pending layer (a second row per key the stream touched);
their published copies under ``<home>/published`` must not, and must follow refreshes and
compactions. Expectations come from ``read_states`` (Spark's merged reader) and hand counts.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from recsys_lib.core.schema import QUARANTINE_TABLE
from recsys_lib.features import entities
from recsys_lib.features.layers import read_states
from recsys_lib.features.publish import publish_all, published_version
from recsys_lib.ingest.validate import read_raw
from recsys_lib.lake import published_lake
from recsys_lib.pipelines.features import run_refresh
from recsys_lib.pipelines.maintenance import lake_tables, run_maintenance
from recsys_lib.streaming.microbatch import process_batch
from tests.spark.helpers import pending_rows, raw_line, write_lines

pytestmark = pytest.mark.spark
NOW = datetime(2024, 6, 1, tzinfo=UTC)
duckdb = pytest.importorskip("duckdb", reason="duckdb is in the dev extra (pip install -e .[dev])")
polars = pytest.importorskip("polars", reason="polars is in the dev extra (pip install -e .[dev])")


def _duckdb_delta() -> object:
    """A DuckDB connection with the delta extension loaded from its PyPI wheel (no download)."""
    ext = pytest.importorskip("duckdb_extension_delta", reason="duckdb-extension-delta is in the dev extra")
    found = sorted(Path(ext.__file__).parent.glob(f"extensions/v{duckdb.__version__}/delta.duckdb_extension"))
    if not found:
        pytest.fail(f"duckdb-extension-delta has no build for duckdb {duckdb.__version__}: pin them together")
    con = duckdb.connect()
    con.execute(f"LOAD '{found[0]}'")
    return con


def _plain(value):
    """One value in a reader-neutral form: maps as dicts, timestamps as UTC microseconds, bytes as bytes."""
    if isinstance(value, datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=UTC)
        return round(stamp.timestamp() * 1_000_000)
    if isinstance(value, dict):
        if set(value) == {"key", "value"}:  # polars' map entry
            return value
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_plain(v) for v in value]
        if items and all(isinstance(v, tuple) and len(v) == 2 for v in items):  # Arrow's map
            return {k: v for k, v in items}
        if items and all(isinstance(v, dict) and set(v) == {"key", "value"} for v in items):
            return {v["key"]: _plain(v["value"]) for v in items}
        return items
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _rows(table: pa.Table, columns: list[str]) -> list[tuple]:
    picked = table.select(columns).to_pylist()
    return sorted(tuple(repr(_plain(r[c])) for c in columns) for r in picked)


def _readers(uri: str, con) -> dict[str, pa.Table]:
    from deltalake import DeltaTable, QueryBuilder

    table = DeltaTable(uri)
    return {
        "duckdb": con.execute(f"SELECT * FROM delta_scan('{uri}')").fetch_arrow_table(),
        "polars": polars.read_delta(uri).to_arrow(),
        "delta-rs": pa.table(QueryBuilder().register("t", table).execute("SELECT * FROM t").read_all()),
    }


def test_published_tables_hold_one_row_per_key_and_follow_refresh_and_compaction(spark, lake, cfg, tmp_path):
    users = entities(cfg.features)["user"]
    published = published_lake(spark, cfg)
    b0 = [raw_line("e1", "u1", "view", "2024-01-01T10:00:00Z"), raw_line("e2", "u2", "click", "2024-01-01T10:05:00Z"),
          "not json"]
    write_lines(tmp_path / "b0", "a.jsonl", b0)
    process_batch(spark, lake, cfg, read_raw(spark, str(tmp_path / "b0")), query="q", batch_id=0, now=NOW)
    assert not published.exists(users.table)  # the stream publishes at compactions only

    refreshed = run_refresh(spark, lake, cfg)
    assert published_version(published, users) == refreshed.tables[users.table]["version"]
    # a stream batch after the refresh: u1 has a base row and a pending row in the working table
    write_lines(tmp_path / "b1", "b.jsonl", [raw_line("e3", "u1", "purchase", "2024-01-01T11:00:00Z", price=5.0)])
    process_batch(spark, lake, cfg, read_raw(spark, str(tmp_path / "b1")), query="q", batch_id=1, now=NOW)
    assert (pending_rows(lake, users), lake.read(users.table).count()) == (1, 3)
    rows = published.read(users.table).collect()
    assert sorted((r["user_id"], r["purchase_count"]) for r in rows) == [("u1", 0), ("u2", 0)]  # as of the refresh
    # published now (as `recsys maintain` does when it cannot compact): u1's base and pending rows merged into one
    assert publish_all(lake, cfg, [users])[users.table]["buckets"] == 1
    rows = published.read(users.table).collect()
    assert sorted((r["user_id"], r["view_count"], r["purchase_count"]) for r in rows) == [("u1", 1, 1), ("u2", 0, 0)]

    report = run_maintenance(lake, cfg=cfg, retention_hours=0)
    assert report[users.table]["pending_folded"] is True
    assert report[f"published/{users.table}"]["published"]["buckets"] == 1  # only u1's bucket is rewritten
    rows = published.read(users.table).collect()
    assert sorted((r["user_id"], r["view_count"], r["purchase_count"], r["click_count"]) for r in rows) == [
        ("u1", 1, 1, 0), ("u2", 0, 0, 1)]
    # the vacuum's commits after the publish change no row: publishing again rewrites nothing, and records that
    again = publish_all(lake, cfg)
    for entity in entities(cfg.features).values():
        assert again[entity.table]["published"] is False, entity.table
        assert published_version(published, entity) == lake.version(entity.table)
        want = read_states(lake, entity, cfg.features).toArrow()
        got = published.read_arrow(entity.table)
        assert _rows(got, want.column_names) == _rows(want, want.column_names), entity.table

    # every published and lake table reads the same in DuckDB, Polars and delta-rs as in Spark
    con = _duckdb_delta()
    tables = [(published, e.table) for e in entities(cfg.features).values()]
    working = {e.table for e in entities(cfg.features).values()}  # internal: their pending layer is documented
    tables += [(lake, t) for t in lake_tables(lake) if t not in working]
    assert {"events", QUARANTINE_TABLE, "feature_generations"} <= {t for _, t in tables}
    for where, name in tables:
        want = where.read(name).toArrow()
        for reader, got in _readers(where.uri(name), con).items():
            assert sorted(got.column_names) == sorted(want.column_names), (name, reader)
            assert _rows(got, want.column_names) == _rows(want, want.column_names), (name, reader)
