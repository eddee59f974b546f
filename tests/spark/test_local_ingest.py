"""Driver-local ingestion (classify, label, commit) against Spark's, line for line and table for table."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from recsys_lib.core.config import load_config
from recsys_lib.datagen.synthetic import GeneratorSpec, generate
from recsys_lib.ingest.canonical import classify_canonical, window
from recsys_lib.ingest.commit import ingest_arrow, ingest_frame
from recsys_lib.ingest.local_dedup import StoredKeys, spark_xxhash64
from recsys_lib.ingest.local_validate import classify_local
from recsys_lib.ingest.validate import classify, read_raw
from recsys_lib.lake import DeltaRsLake

pytestmark = pytest.mark.spark

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
HEAD = '"event_id":"e1","user_id":"u1","event_type":"view","item_id":"i1"'


def _line(ts='"2024-05-01T10:00:00Z"', extra=""):
    return "{" + HEAD + f',"event_ts":{ts}{extra}' + "}"


TRICKY = [
    _line(), _line("1714557600000"), _line('"1714557600000"'), _line('" 1714557600000 "'),
    _line('"2024-05-01T10:00:00+05:30"'), _line('"2024-05-01T10:00:00.123456Z"'),
    _line('"2024-05-01T10:00:00.5-03:00"'),
    _line('"2024-05-01T10:00:00.123456789Z"'), _line('"2024-05-01 10:00:00Z"'), _line('"2024-05-01T10:00Z"'),
    _line('"2024-05-01T10:00:00z"'), _line('"2024-05-01T10:00:00+0530"'), _line('"2024-05-01T10:00:00"'),
    _line('"2024-13-01T10:00:00Z"'), _line('"2024-02-30T10:00:00Z"'), _line('"2024-05-01T24:00:00Z"'),
    _line('"2024-05-01T10:00:00+19:00"'), _line('"yesterday"'), _line('""'), _line("null"), _line("true"),
    _line("1.5e12"), _line('{"a":1}'), _line("[1]"), _line('"2024-06-01T13:00:01Z"'),
    _line(extra=',"price":9.5'), _line(extra=',"price":0'), _line(extra=',"price":-0.01'), _line(extra=',"price":"9"'),
    _line(extra=',"price":"NaN"'), _line(extra=',"price":NaN'), _line(extra=',"price":1e400'),
    _line(extra=',"price":true'), _line(extra=',"price":123456789012345678901234567890'),
    _line(extra=',"quantity":0'), _line(extra=',"quantity":2'), _line(extra=',"quantity":2.0'),
    _line(extra=',"quantity":"3"'), _line(extra=',"quantity":100000000000000000000'),
    _line(extra=',"quantity":"x","price":5'), _line(extra=',"price":5,"quantity":"x"'),
    _line(extra=',"session_id":7'), _line(extra=',"session_id":7.5'), _line(extra=',"session_id":false'),
    _line(extra=',"category_id":"  "'), _line(extra=',"category_id":{"id":1}'), _line(extra=',"query":"[a"'),
    _line(extra=',"category_id":"\\u00fc"'), _line(extra=',"category_id":"\\ud800"'), _line(extra=',"x":1'),
    _line(extra=',"event_id":"dup-key"'), _line(extra=',"item_id":""'), _line(extra=',"ev\\u0065nt_id":"dup2"'),
    _line(extra=',"category_id":"price","price":3'), _line(extra=',"query":"caf\\u00e9"'),
    '{"event_id":"s1","user_id":"u1","event_type":"search","event_ts":"2024-05-01T10:00:00Z","query":"q"}',
    '{"event_id":"s2","user_id":"u1","event_type":"search","event_ts":"2024-05-01T10:00:00Z","item_id":" "}',
    '{"event_id":"s3","user_id":"u1","event_type":"VIEW","event_ts":"2024-05-01T10:00:00Z","item_id":"i"}',
    '{"event_id":"s4","user_id":"  ","event_type":"view","event_ts":"2024-05-01T10:00:00Z","item_id":"i"}',
    '{"event_id":"s5","user_id":"[u]","event_type":"view","event_ts":"2024-05-01T10:00:00Z","item_id":"i"}',
    '{"event_id":"s6","user_id":"u","event_ts":"2024-05-01T10:00:00Z","item_id":"i"}',
    '{"event_id":7,"user_id":8,"event_type":"view","event_ts":"2024-05-01T10:00:00Z","item_id":9}',
    "[1,2]", '"x"', "42", "null", "", "   ", "garbage", '{"event_id":"x"', '{"event_id":"x"} trailing',
    "{'event_id':'q1','user_id':'u','event_type':'view','event_ts':'2024-05-01T10:00:00Z','item_id':'i'}",
    '\t{"event_id":"t1"}', ' {"event_id":"t2","user_id":"u","event_type":"view","event_ts":1,"item_id":"i"}',
    '{"event_id":"p1","price":5,"user_id":"u1","event_type":"view","event_ts":"2024-05-01T10:00:00Z","item_id":"i"',
    "x" * 300, '{"event_id":"p2","price":5, x}', '{"event_id":"p3","price":5,"user_id":"u"', '{"event_id":"x",}',
    "NaN", "{'event_id':'q2'", '{"event_id":"q3","query":"it\'s"', _line(extra=',"price":""'),
    _line(extra=',"price":" 5"'), _line(extra=',"price":{"a":1}'), _line(extra=',"price":[]'),
    _line(extra=',"price":"cheap","quantity":"2"'), _line(extra=',"quantity":1,"price":"cheap"'),
    _line('"2024-01-01T00:00:60Z"'), _line('"2024-02-29T10:00:00Z"'), _line('"2023-02-29T10:00:00Z"'),
    _line('"2024-01-01T24:00:00Z"'), _line('"2024-00-10T10:00:00Z"'),
]


def _canonical(ts="1714557600000", sep=",", **fields):
    """A line in schema order (the canonical lane's shape); ``fields`` are JSON texts."""
    head = {"event_id": '"c1"', "event_ts": ts, "user_id": '"u1"', "event_type": '"view"', "item_id": '"i1"'}
    body = {**head, **fields}
    return "{" + sep.join(f'"{k}":{v}' for k, v in body.items() if v is not None) + "}"


#: Lines the canonical (Arrow) lane decides.
CANONICAL = [
    _canonical(), _canonical('"1714557600000"'), _canonical("0"), _canonical('"2024-05-01T10:00:00Z"'),
    _canonical('"2024-05-01T10:00:00.5Z"'), _canonical('"2024-05-01T10:00:00.123456+05:30"'),
    _canonical('"2024-05-01T23:59:59.999999-03:00"'), _canonical('"2024-02-29T10:00:00+17:59"'),
    _canonical('"1900-03-01T00:00:00.000001Z"'), _canonical('"2024-06-01T13:00:00Z"'),
    _canonical('"2024-06-01T13:00:01Z"'), _canonical("1717246801000"), _canonical('"2024-04-22T11:59:59Z"'),
    _canonical(item_id='""'), _canonical(item_id="null"), _canonical(item_id=None),
    _canonical(event_type='"search"', item_id=None, query='"red shoes, size 9"'),
    _canonical(event_type='"search"', item_id='""', query='""'),
    _canonical(event_type='"purchase"', category_id='"ü€𝄞"', price="12.345678901234567", quantity="3",
               session_id='"s 1"', query="null"),
    _canonical(price="-0.0"), _canonical(price="0"), _canonical(price="-0.01"), _canonical(price="5"),
    _canonical(price="1234567890123456.5"), _canonical(price="0.30000000000000004"), _canonical(price="null"),
    _canonical(quantity="0"), _canonical(quantity="-3"), _canonical(quantity="999999999999999999"),
    _canonical(price="-1", quantity="0"), _canonical(item_id='""', price="-1"),
    _canonical(sep=", ", category_id='"c 1"'), _canonical(event_type='"add_to_cart"', category_id='""'),
]
#: Canonical-looking lines the canonical lane leaves to the per-line lane.
NOT_CANONICAL = [
    _canonical('"2023-02-29T10:00:00Z"'), _canonical('"2024-05-01T24:00:00Z"'), _canonical('"0000-01-01T00:00:00Z"'),
    _canonical('"2024-05-01T10:00:00+18:00"'), _canonical(price="1e3"), _canonical(item_id='" i"'),
    _canonical(item_id='"{x"'), _canonical(category_id='"\\u00fc"'), _canonical(quantity="1.0"), _canonical(price="-0"),
    _canonical(event_type='"wishlist"'), _canonical(extra="1"), _canonical(user_id='"  "'),
    _canonical(event_type='"view"', item_id='"i1"', query='"' + "x" * 300 + '"'),
]
TYPED = ("event_id", "event_ts", "user_id", "event_type", "item_id", "category_id", "price", "quantity", "session_id",
         "query", "raw_bytes")


def _outcome(row):
    """What a classified line decides: its reason, or its typed fields when valid."""
    if row["reason"] is not None:
        return row["reason"], row["reason_field"], row["raw_bytes"]
    out = {k: row[k] for k in TYPED}
    ts = out["event_ts"]
    out["event_ts"] = ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts
    return out


def _spark_classify(spark, lines, lateness):
    def run(table):
        return classify(spark.createDataFrame(table), max_line_bytes=256, max_future_skew_s=3600.0, now=NOW,
                        allowed_lateness_s=lateness).toArrow()
    return run


@pytest.mark.parametrize("lateness", [None, 40 * 86400.0], ids=["any-age", "lateness-40d"])
def test_local_classify_equals_spark_line_for_line(spark, lateness):
    lines = pa.table({"value": pa.array(TRICKY), "source_file": pa.array(["file:/in/a.jsonl"] * len(TRICKY))})
    spark_rows = {r["value"]: _outcome(r) for r in _spark_classify(spark, TRICKY, lateness)(lines).to_pylist()}
    spark_calls = []

    def counted(table):
        spark_calls.append(table.num_rows)
        return _spark_classify(spark, TRICKY, lateness)(table)

    local, handed_over = classify_local(lines, max_line_bytes=256, max_future_skew_s=3600.0, now=NOW,
                                        allowed_lateness_s=lateness, fallback=counted)
    local_rows = {r["value"]: _outcome(r) for r in local.to_pylist()}
    assert local.num_rows == len(TRICKY)
    for line in TRICKY:
        assert local_rows[line] == spark_rows[line], line
    assert handed_over == sum(spark_calls)
    assert 0 < handed_over < len(TRICKY) // 2  # most lines, including many bad ones, are decided locally


@pytest.mark.parametrize("lateness", [None, 40 * 86400.0], ids=["any-age", "lateness-40d"])
def test_canonical_lane_equals_spark(spark, lateness):
    lines = CANONICAL + NOT_CANONICAL
    raw = pa.table({"value": pa.array(lines), "source_file": pa.array(["file:/in/a.jsonl"] * len(lines))})
    latest, earliest = window(NOW, 3600.0, lateness)
    decided, rest = classify_canonical(raw, max_line_bytes=256, latest=latest, earliest=earliest)
    assert decided.column("value").to_pylist() == CANONICAL
    assert rest.column("value").to_pylist() == NOT_CANONICAL
    # (the rest is the per-line lane's: some of it, a year-0 timestamp, Python cannot even hold)
    spark_rows = {r["value"]: _outcome(r) for r in _spark_classify(spark, lines, lateness)(
        raw.slice(0, len(CANONICAL))).to_pylist()}
    for row in decided.to_pylist():
        assert _outcome(row) == spark_rows[row["value"]], row["value"]
    reasons = {row["reason"] for row in decided.to_pylist()}
    assert {None, "missing_field", "future_timestamp", "negative_price", "bad_quantity"} <= reasons
    assert ("too_late" in reasons) == (lateness is not None)


def test_spark_xxhash64_matches_spark(spark):
    from pyspark.sql import functions as F

    texts = ["", "a", "{\"event_id\":\"e1\"}", "ü€𝄞", "x" * 100]
    rows = spark.createDataFrame([(t,) for t in texts], "t string").select("t", F.xxhash64("t")).collect()
    assert {t: h for t, h in rows} == {t: spark_xxhash64(t) for t in texts}


def _tables(lake):
    events = {r["event_id"]: {k: v for k, v in r.asDict().items() if k != "ingested_at"}
              for r in lake.read("events").collect()}
    lines = {r["record_key"]: (r["raw"], r["reason"], r["reason_field"], r["raw_bytes"])
             for r in lake.read("events_quarantine").collect()}
    return events, lines


def test_local_ingest_equals_spark_ingest(spark, tmp_path, shared_id_key):
    raw_dir = tmp_path / "raw"
    generate(GeneratorSpec(users=50, items=40, days=2, events=1_500, bad_fraction=0.1, duplicate_fraction=0.05,
                           seed=17, compress=False), raw_dir)
    raw = read_raw(spark, str(raw_dir))
    lines = raw.toArrow()
    summaries = {}
    for engine in ("spark", "local"):
        cfg = load_config(overrides=[f"home={tmp_path / engine}"])
        lake = DeltaRsLake(spark, cfg.lake_root)
        stored = StoredKeys(lake)
        runs = []
        for attempt in range(2):  # the second run finds everything stored
            common = {"run_id": "r", "source": "s", "now": NOW, "app_id": "app", "batch_id": attempt}
            summary = (ingest_frame(spark, lake, cfg, raw, **common) if engine == "spark"
                       else ingest_arrow(spark, lake, cfg, lines, stored, **common))
            runs.append({k: v for k, v in summary.to_json().items()
                         if k not in ("seconds", "stage_seconds", "events_per_second")})
        summaries[engine] = (runs, _tables(lake))
    (spark_runs, spark_tables), (local_runs, local_tables) = summaries["spark"], summaries["local"]
    assert local_runs == spark_runs
    assert spark_runs[0]["quarantined"] > 0 and spark_runs[0]["duplicates"] > 0
    assert spark_runs[1]["valid"] == 0 and spark_runs[1]["balanced"]
    assert local_tables == spark_tables


def test_stored_keys_follow_appends_and_reload_after_rewrites(spark, lake):
    from datetime import timedelta

    from recsys_lib.core.schema import EVENTS_SCHEMA
    from recsys_lib.ingest.commit import EVENTS_SPEC
    from recsys_lib.lake.files import spark_to_arrow
    from tests.spark.helpers import event

    def rows(*ids):
        names = EVENTS_SCHEMA.fieldNames()
        return pa.Table.from_pylist([dict(zip(names, event(i, "u", "view", timedelta(0), "i"), strict=True))
                                     for i in ids], spark_to_arrow(EVENTS_SCHEMA))

    def found(stored, ids):
        return set(stored.existing("events", pa.array(ids)).to_pylist())

    stored = StoredKeys(lake)
    lake.append_arrow(EVENTS_SPEC, rows("e1", "e2"))
    assert found(stored, ["e1", "e3"]) == {"e1"}
    lake.append_arrow(EVENTS_SPEC, rows("e3"))  # read incrementally: only the new commit's file
    assert found(stored, ["e1", "e3", "e4"]) == {"e1", "e3"}
    lake.overwrite(EVENTS_SPEC, spark.createDataFrame(rows("e9")))  # removes data: the column is reloaded
    assert found(stored, ["e1", "e9"]) == {"e9"}
