from __future__ import annotations

from datetime import UTC, datetime

import pytest

from recsys_lib.ingest.validate import classify

pytestmark = pytest.mark.spark

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
GOOD = '"event_id":"e1","event_ts":"2024-05-01T10:00:00Z","user_id":"u1"'


def _classify(spark, lines, max_line_bytes=2048, skew_s=3600.0):
    raw = spark.createDataFrame([(line, "file:/landing/x.jsonl") for line in lines], "value string, source_file string")
    return classify(raw, max_line_bytes=max_line_bytes, max_future_skew_s=skew_s, now=NOW).collect()


@pytest.mark.parametrize(
    ("line", "reason", "field"),
    [
        ("x" * 3000, "oversized_line", None),
        ("this is not json", "unparseable", None),
        ("", "unparseable", None),
        ('{"event_id":"e1","event_ts":', "unparseable", None),
        ("[1, 2]", "not_an_object", None),
        ('"just a string"', "not_an_object", None),
        ("{" + GOOD + ',"event_type":"view","item_id":"i1","price":"cheap"}', "ill_typed", "price"),
        ("{" + GOOD + ',"event_type":"view","item_id":"i1","quantity":1.5}', "ill_typed", "quantity"),
        ("{" + GOOD + ',"event_type":"view","item_id":{"id":1}}', "ill_typed", "item_id"),
        ('{"event_id":"e1","event_ts":"2024-05-01T10:00:00Z","user_id":["u"],"event_type":"view","item_id":"i"}',
         "ill_typed", "user_id"),
        ('{"event_ts":"2024-05-01T10:00:00Z","user_id":"u1","event_type":"view","item_id":"i1"}',
         "missing_field", "event_id"),
        ('{"event_id":"e1","user_id":"u1","event_type":"view","item_id":"i1"}', "missing_field", "event_ts"),
        ('{"event_id":"e1","event_ts":"2024-05-01T10:00:00Z","user_id":"  ","event_type":"view","item_id":"i1"}',
         "missing_field", "user_id"),
        ("{" + GOOD + ',"item_id":"i1"}', "missing_field", "event_type"),
        ("{" + GOOD + ',"event_type":"wishlist","item_id":"i1"}', "unknown_event_type", "event_type"),
        ("{" + GOOD + ',"event_type":"VIEW","item_id":"i1"}', "unknown_event_type", "event_type"),
        ("{" + GOOD + ',"event_type":"purchase"}', "missing_field", "item_id"),
        ('{"event_id":"e1","event_ts":"2024-05-01 10:00:00","user_id":"u1","event_type":"view","item_id":"i1"}',
         "bad_timestamp", "event_ts"),
        ('{"event_id":"e1","event_ts":"2024-13-45T99:00:00Z","user_id":"u1","event_type":"view","item_id":"i1"}',
         "bad_timestamp", "event_ts"),
        ('{"event_id":"e1","event_ts":"yesterday","user_id":"u1","event_type":"view","item_id":"i1"}',
         "bad_timestamp", "event_ts"),
        ('{"event_id":"e1","event_ts":"2024-06-01T13:00:01Z","user_id":"u1","event_type":"view","item_id":"i1"}',
         "future_timestamp", "event_ts"),
        ("{" + GOOD + ',"event_type":"view","item_id":"i1","price":-0.01}', "negative_price", "price"),
        ("{" + GOOD + ',"event_type":"purchase","item_id":"i1","quantity":0}', "bad_quantity", "quantity"),
    ],
)
def test_each_rule(spark, line, reason, field):
    [row] = _classify(spark, [line])
    assert (row["reason"], row["reason_field"]) == (reason, field)


def test_first_failing_rule_wins(spark):
    # unknown type and a negative price: the type is checked first
    [row] = _classify(spark, ["{" + GOOD + ',"event_type":"like","item_id":"i1","price":-1}'])
    assert row["reason"] == "unknown_event_type"


def test_valid_records_are_typed(spark):
    rows = _classify(spark, [
        '{"event_id":"a","event_ts":"2024-05-01T12:00:00+02:00","user_id":7,"event_type":"purchase",'
        '"item_id":"i1","category_id":"c1","price":9.5,"quantity":2,"session_id":"s","query":null}',
        '{"event_id":"b","event_ts":1714557600000,"user_id":"u2","event_type":"search","query":"red shoes",'
        '"item_id":""}',
        '{"event_id":"c","event_ts":"2024-06-01T12:59:59.5Z","user_id":"u3","event_type":"view","item_id":"i2",'
        '"price":0}',
    ])
    by_id = {r["event_id"]: r for r in rows}
    assert all(r["reason"] is None for r in rows)
    a = by_id["a"]
    assert a["event_ts"] == datetime(2024, 5, 1, 10, 0)  # +02:00 converted to UTC (session zone is UTC)
    assert (a["user_id"], a["price"], a["quantity"], a["query"]) == ("7", 9.5, 2, None)
    assert by_id["b"]["event_ts"] == datetime(2024, 5, 1, 10, 0)  # epoch milliseconds
    assert by_id["b"]["item_id"] is None  # blank optional text becomes null
    assert by_id["c"]["event_ts"] == datetime(2024, 6, 1, 12, 59, 59, 500000)  # within the 1h skew


def test_future_skew_is_configurable(spark):
    line = '{"event_id":"e","event_ts":"2024-06-01T12:30:00Z","user_id":"u","event_type":"view","item_id":"i"}'
    assert _classify(spark, [line], skew_s=3600)[0]["reason"] is None
    assert _classify(spark, [line], skew_s=60)[0]["reason"] == "future_timestamp"


def test_allowed_lateness_quarantines_old_events_only_when_set(spark):
    old = '{"event_id":"e","event_ts":"2024-05-31T10:00:00Z","user_id":"u","event_type":"view","item_id":"i"}'
    raw = spark.createDataFrame([(old, "f")], "value string, source_file string")
    default = classify(raw, max_line_bytes=2048, max_future_skew_s=3600, now=NOW).first()
    strict = classify(raw, max_line_bytes=2048, max_future_skew_s=3600, now=NOW, allowed_lateness_s=3600).first()
    lenient = classify(raw, max_line_bytes=2048, max_future_skew_s=3600, now=NOW, allowed_lateness_s=2 * 86400).first()
    assert default["reason"] is None and lenient["reason"] is None
    assert (strict["reason"], strict["reason_field"]) == ("too_late", "event_ts")
