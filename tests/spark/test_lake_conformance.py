"""The lake's contract, run against its engine (delta-rs; a second engine would run the same suite)."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pyspark.sql import types as T

from recsys_lib.lake import LakeConflictError, RetryPolicy, TableNotFound, TableSpec, open_lake

pytestmark = pytest.mark.spark

SCHEMA = T.StructType([
    T.StructField("k", T.StringType(), False),
    T.StructField("n", T.LongType()),
    T.StructField("ts", T.TimestampType()),
    T.StructField("d", T.DateType(), False),
])
SPEC = TableSpec("t", SCHEMA, ("d",))
D1, D2 = date(2024, 1, 1), date(2024, 1, 2)


@pytest.fixture
def engine_lake(spark, cfg):
    return open_lake(spark, cfg, engine="delta-rs")


def _df(spark, rows):
    return spark.createDataFrame(rows, SCHEMA)


def _rows(lake, name="t", **kw):
    return sorted((r["k"], r["n"], r["d"]) for r in lake.read(name, **kw).collect())


def test_append_and_read_back_with_partition_values(spark, engine_lake):
    result = engine_lake.append(SPEC, _df(spark, [("a", 1, datetime(2024, 1, 1, 5), D1), ("b", 2, None, D2)]))
    assert not result.skipped and result.rows == 2
    assert _rows(engine_lake) == [("a", 1, D1), ("b", 2, D2)]
    ts = engine_lake.read("t").where("k = 'a'").first()["ts"]
    assert ts == datetime(2024, 1, 1, 5)


def test_replayed_batch_id_is_skipped(spark, engine_lake):
    df = _df(spark, [("a", 1, None, D1)])
    first = engine_lake.append(SPEC, df, app_id="stream-1", batch_id=7)
    again = engine_lake.append(SPEC, df, app_id="stream-1", batch_id=7)
    older = engine_lake.append(SPEC, df, app_id="stream-1", batch_id=3)
    assert not first.skipped and again.skipped and older.skipped
    assert engine_lake.txn_version("t", "stream-1") == 7
    assert _rows(engine_lake) == [("a", 1, D1)]
    assert engine_lake.version("t") == first.version


def test_merge_upserts_and_is_idempotent_per_batch(spark, engine_lake):
    engine_lake.append(SPEC, _df(spark, [("a", 1, None, D1), ("b", 2, None, D1)]))
    delta = _df(spark, [("a", 10, None, D1), ("c", 3, None, D2)])
    add = {"n": "t.n + s.n"}
    r1 = engine_lake.merge(SPEC, delta, ["k"], update=add, app_id="m", batch_id=1)
    r2 = engine_lake.merge(SPEC, delta, ["k"], update=add, app_id="m", batch_id=1)
    assert not r1.skipped and r2.skipped
    # hand-computed: a = 1 + 10, b untouched, c inserted
    assert _rows(engine_lake) == [("a", 11, D1), ("b", 2, D1), ("c", 3, D2)]
    engine_lake.merge(SPEC, _df(spark, [("b", 20, None, D1)]), ["k"])  # default update: replace
    assert _rows(engine_lake)[1] == ("b", 20, D1)


def test_overwrite_replaces_everything_in_one_version(spark, engine_lake):
    engine_lake.append(SPEC, _df(spark, [("a", 1, None, D1), ("b", 2, None, D2)]))
    before = engine_lake.version("t")
    result = engine_lake.overwrite(SPEC, _df(spark, [("z", 9, None, D2)]))
    assert result.version == before + 1
    assert _rows(engine_lake) == [("z", 9, D2)]


def test_time_travel_by_version_and_timestamp(spark, engine_lake):
    v1 = engine_lake.append(SPEC, _df(spark, [("a", 1, None, D1)])).version
    time.sleep(1.1)
    between = datetime.now(UTC)
    time.sleep(1.1)
    engine_lake.append(SPEC, _df(spark, [("b", 2, None, D1)]))
    assert _rows(engine_lake, version=v1) == [("a", 1, D1)]
    assert _rows(engine_lake, timestamp=between) == [("a", 1, D1)]
    assert len(_rows(engine_lake)) == 2


def test_history_and_change_feed(spark, engine_lake):
    v1 = engine_lake.append(SPEC, _df(spark, [("a", 1, None, D1)])).version
    engine_lake.merge(SPEC, _df(spark, [("a", 5, None, D1), ("b", 2, None, D2)]), ["k"], metadata={"why": "test"})
    ops = [h["operation"] for h in engine_lake.history("t")]
    assert ops[0] == "MERGE" and "CREATE TABLE" in ops[-1]
    changes = engine_lake.changes("t", v1 + 1).collect()
    got = sorted((r["k"], r["n"], r["_change_type"]) for r in changes)
    assert got == [("a", 1, "update_preimage"), ("a", 5, "update_postimage"), ("b", 2, "insert")]
    inserts = engine_lake.changes("t", v1, v1).collect()
    assert [(r["k"], r["_change_type"], r["_commit_version"]) for r in inserts] == [("a", "insert", v1)]


def test_inserted_rows_of_a_version_range(spark, engine_lake):
    """Appends (read from their added files), a compaction in between (no new rows) and a merge
    (through the change feed) each give exactly the rows they inserted."""
    engine_lake.create(SPEC)
    v1 = engine_lake.append(SPEC, _df(spark, [("a", 1, None, D1), ("b", 2, None, D2)])).version
    v2 = engine_lake.append(SPEC, _df(spark, [("c", 3, None, D1)])).version
    engine_lake.compact("t")
    v4 = engine_lake.append(SPEC, _df(spark, [("d", 4, None, D2)])).version

    def got(first, last):
        return sorted((r["k"], r["n"], r["d"]) for r in engine_lake.inserted("t", first, last).collect())

    assert got(0, v1) == [("a", 1, D1), ("b", 2, D2)]
    assert got(v2, v4) == [("c", 3, D1), ("d", 4, D2)]  # the compaction between them adds nothing
    v5 = engine_lake.merge(SPEC, _df(spark, [("a", 9, None, D1), ("e", 5, None, D1)]), ["k"]).version
    assert got(v4, v5) == [("d", 4, D2), ("e", 5, D1)]  # a merge's update is not an insert


def test_delta_rs_reads_appended_rows_without_the_change_feed(spark, lake, monkeypatch):
    lake.create(SPEC)
    v1 = lake.append(SPEC, _df(spark, [("a", 1, None, D1)])).version
    lake.compact("t")
    v3 = lake.append(SPEC, _df(spark, [("b", 2, None, D2)])).version

    def no_change_feed(*args, **kwargs):
        raise AssertionError("append-only ranges must not go through the change feed (driver memory)")

    monkeypatch.setattr(lake, "changes", no_change_feed)
    assert sorted(r["k"] for r in lake.inserted("t", v1, v3).collect()) == ["a", "b"]


def test_compaction_keeps_data_and_vacuum_removes_old_files(spark, engine_lake, cfg):
    for i in range(4):
        engine_lake.append(SPEC, _df(spark, [(f"k{i}", i, None, D1)]))
    before = _rows(engine_lake)
    engine_lake.compact("t")
    assert _rows(engine_lake) == before
    table_dir = Path(cfg.table_uri("t"))
    files_before = len(list(table_dir.rglob("*.parquet")))
    engine_lake.vacuum("t", retention_hours=0)
    files_after = len(list(table_dir.rglob("*.parquet")))
    assert files_after < files_before
    assert _rows(engine_lake) == before


def test_missing_table_is_named(engine_lake):
    with pytest.raises(TableNotFound, match="'nope'"):
        engine_lake.read("nope")


def test_empty_append_without_txn_commits_nothing(spark, engine_lake):
    engine_lake.create(SPEC)
    v0 = engine_lake.version("t")
    result = engine_lake.append(SPEC, _df(spark, []))
    assert result.skipped and engine_lake.version("t") == v0


# -- delta-rs specifics: conflicts and atomicity ------------------------------------

def test_real_conflict_is_retried_on_a_fresh_snapshot(spark, lake, monkeypatch):
    """A merge planned on a stale snapshot conflicts with a concurrent rewrite, then succeeds."""
    from deltalake import DeltaTable

    lake.append(SPEC, _df(spark, [("a", 1, None, D1)]))
    stale = DeltaTable(lake.uri("t"))
    lake.overwrite(SPEC, _df(spark, [("a", 100, None, D1)]))  # concurrent writer removes the file
    real_table = lake._table
    calls = {"n": 0}

    def table(name, version=None):
        calls["n"] += 1
        return stale if calls["n"] == 1 else real_table(name, version)  # first attempt sees the old snapshot

    monkeypatch.setattr(lake, "_table", table)
    lake.merge(SPEC, _df(spark, [("a", 1, None, D1)]), ["k"], update={"n": "t.n + s.n"})
    monkeypatch.undo()
    assert _rows(lake) == [("a", 101, D1)]  # applied once, on the fresh snapshot
    assert calls["n"] >= 2


def test_retry_is_bounded_and_names_the_table():
    from deltalake.exceptions import CommitFailedError

    attempts = []

    def always_conflicts(attempt):
        attempts.append(attempt)
        raise CommitFailedError("conflict: concurrent append")

    policy = RetryPolicy(attempts=3, backoff=0.001, backoff_max=0.002)
    with pytest.raises(LakeConflictError, match=r"merge on table 'events' still conflicted after 4 attempts"):
        policy.run(always_conflicts, is_conflict=lambda e: isinstance(e, CommitFailedError), table="events",
                   what="merge")
    assert attempts == [0, 1, 2, 3]


def test_other_errors_are_not_retried():
    calls = []

    def boom(attempt):
        calls.append(attempt)
        raise ValueError("schema mismatch")

    with pytest.raises(ValueError):
        RetryPolicy(attempts=5, backoff=0.001).run(boom, is_conflict=lambda e: False, table="t", what="append")
    assert calls == [0]


def test_failed_commit_leaves_table_and_folder_clean(spark, lake, cfg, monkeypatch):
    from deltalake import DeltaTable

    lake.append(SPEC, _df(spark, [("a", 1, None, D1)]))
    version = lake.version("t")
    files = sorted(Path(cfg.table_uri("t")).rglob("*.parquet"))

    def broken(self, *args, **kwargs):
        raise OSError("disk full while writing the log")

    monkeypatch.setattr(DeltaTable, "create_write_transaction", broken)
    with pytest.raises(OSError, match="disk full"):
        lake.append(SPEC, _df(spark, [("b", 2, None, D2)]))
    monkeypatch.undo()
    assert lake.version("t") == version
    assert _rows(lake) == [("a", 1, D1)]
    assert sorted(Path(cfg.table_uri("t")).rglob("*.parquet")) == files  # written files were removed


def test_one_task_writing_many_partitions_reads_back_each_row_once(spark, engine_lake):
    # one Spark task writes same-named files into several partition folders
    rows = [(f"k{i}", i, None, date(2024, 1, 1 + i % 5)) for i in range(50)]
    engine_lake.append(SPEC, _df(spark, rows).coalesce(1))
    got = engine_lake.read("t")
    assert got.count() == 50
    assert sorted((r["k"], r["d"]) for r in got.collect()) == sorted((k, d) for k, _, _, d in rows)


def test_partition_read_and_replace_touch_only_the_named_partitions(spark, engine_lake):
    engine_lake.append(SPEC, _df(spark, [("a", 1, None, D1), ("b", 2, None, D1), ("c", 3, None, D2)]))
    read_at = engine_lake.version("t")
    assert _rows(engine_lake, partitions=("d", [D1])) == [("a", 1, D1), ("b", 2, D1)]
    # new contents of partition D1: a updated, b kept, d added; D2 is not named, so c stays
    result = engine_lake.replace_partitions(
        SPEC, _df(spark, [("a", 10, None, D1), ("b", 2, None, D1), ("d", 4, None, D1)]), "d", [D1],
        read_version=read_at, metadata={"job": "test"})
    assert result.version == read_at + 1 and result.rows == 3
    assert _rows(engine_lake) == [("a", 10, D1), ("b", 2, D1), ("c", 3, D2), ("d", 4, D1)]
    assert _rows(engine_lake, version=read_at) == [("a", 1, D1), ("b", 2, D1), ("c", 3, D2)]
    assert engine_lake.job_metadata("t", "job") == "test"


def test_replace_partitions_from_a_stale_version_conflicts(spark, engine_lake):
    engine_lake.append(SPEC, _df(spark, [("a", 1, None, D1)]))
    read_at = engine_lake.version("t")
    engine_lake.overwrite(SPEC, _df(spark, [("a", 5, None, D1)]))  # a concurrent full refresh
    with pytest.raises(LakeConflictError, match="'t'"):
        engine_lake.replace_partitions(SPEC, _df(spark, [("a", 2, None, D1)]), "d", [D1], read_version=read_at)
    assert _rows(engine_lake) == [("a", 5, D1)]


def test_replace_partitions_rejects_a_non_partition_column(spark, engine_lake):
    engine_lake.append(SPEC, _df(spark, [("a", 1, None, D1)]))
    with pytest.raises(ValueError, match="'k' is not a partition column"):
        engine_lake.replace_partitions(SPEC, _df(spark, []), "k", ["a"], read_version=engine_lake.version("t"))


def test_delta_rs_writes_doubles_without_dictionary_encoding(spark, cfg, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lake = open_lake(spark, cfg, engine="delta-rs")
    schema = T.StructType([T.StructField("k", T.StringType(), False), T.StructField("x", T.DoubleType()),
                           T.StructField("d", T.DateType(), False)])
    spec = TableSpec("doubles", schema, ("d",))
    # few distinct values, so the writers would pick dictionary encoding for both columns if allowed
    rows = [("a" if n % 2 else "b", 0.5 if n % 3 else 0.25, D1) for n in range(60)]
    lake.overwrite(spec, spark.createDataFrame(rows, schema).coalesce(1))  # Spark writes
    lake.append_arrow(spec, pa.table({"k": ["b", "c"] * 30, "x": [0.125, 0.5] * 30, "d": [D2] * 60}))  # the driver
    files = sorted(Path(lake.uri("doubles").removeprefix("file://")).rglob("*.parquet"))
    assert {f.name.endswith(".c000.snappy.parquet") for f in files} == {True, False}  # Spark's and Arrow's
    for f in files:
        meta = pq.ParquetFile(f).metadata.row_group(0)
        encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
        assert not any("DICTIONARY" in e for e in encodings["x"]), (f, encodings)
        assert any("DICTIONARY" in e for e in encodings["k"]), (f, encodings)  # strings keep it


def test_a_write_with_other_columns_fails_naming_them_and_writes_nothing(spark, engine_lake, tmp_path):
    from recsys_lib.lake import SchemaDrift

    engine_lake.append(SPEC, _df(spark, [("a", 1, None, D1)]))
    before = engine_lake.version("t")
    files = sorted(p.name for p in Path(engine_lake.uri("t")).rglob("*.parquet"))
    drifted = T.StructType([
        T.StructField("k", T.StringType(), False),
        T.StructField("n", T.StringType()),          # retyped
        T.StructField("extra", T.LongType()),        # new
        T.StructField("d", T.DateType(), False),     # ts dropped
    ])
    rows = spark.createDataFrame([("b", "2", 3, D1)], drifted)
    with pytest.raises(SchemaDrift) as err:
        engine_lake.append(TableSpec("t", drifted, ("d",)), rows)
    message = str(err.value)
    assert "missing in the table: extra" in message and "not written by this code: ts" in message
    assert "n (int64 stored, string written)" in message
    assert engine_lake.version("t") == before
    assert sorted(p.name for p in Path(engine_lake.uri("t")).rglob("*.parquet")) == files
    assert _rows(engine_lake) == [("a", 1, D1)]
