"""The canonical lane on hand-computed lines (its equality with Spark is in tests/spark/test_local_ingest.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from recsys_lib.ingest.canonical import classify_canonical, window

pytestmark = pytest.mark.unit

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
LINES = [
    # 10:00:00.25 at +05:30 is 04:30:00.25 UTC
    '{"event_id":"a","event_ts":"2024-05-01T10:00:00.25+05:30","user_id":"u","event_type":"view","item_id":"i",'
    '"price":2.5,"quantity":null,"session_id":"","query":null}',
    # 1714557600000 ms is 2024-05-01T10:00:00Z
    '{"event_id":"b", "event_ts":1714557600000, "user_id":"u", "event_type":"search", "query":"red shoes"}',
    '{"event_id":"c","event_ts":"1714557600000","user_id":"u","event_type":"view","item_id":""}',
    '{"event_id":"d","event_ts":"2024-06-01T13:00:01Z","user_id":"u","event_type":"view","item_id":"i"}',
    '{"event_id":"e","event_ts":0,"user_id":"u","event_type":"purchase","item_id":"i","price":-1,"quantity":0}',
    '{"event_id":"f","event_ts":"2024-02-30T00:00:00Z","user_id":"u","event_type":"view","item_id":"i"}',
    '{"event_ts":0,"event_id":"g","user_id":"u","event_type":"view","item_id":"i"}',
]


@pytest.mark.parametrize("text_type", [pa.string(), pa.large_string()])
def test_canonical_lane_by_hand(text_type):
    raw = pa.table({"value": pa.array(LINES, text_type), "source_file": pa.array(["f"] * len(LINES), text_type)})
    latest, earliest = window(NOW, 3600.0, None)
    decided, rest = classify_canonical(raw, max_line_bytes=1024, latest=latest, earliest=earliest)
    rows = {json.loads(r["value"])["event_id"]: r for r in decided.to_pylist()}
    assert sorted(rows) == ["a", "b", "c", "d", "e"]
    # 30 February, and a key out of schema order, are the per-line lane's
    assert rest.column("value").to_pylist() == LINES[5:]

    a = rows["a"]
    assert a["reason"] is None and a["event_ts"] == datetime(2024, 5, 1, 4, 30, 0, 250000, tzinfo=UTC)
    assert (a["price"], a["quantity"], a["session_id"], a["query"]) == (2.5, None, None, None)  # "" -> null
    assert a["raw_bytes"] == len(LINES[0])
    b = rows["b"]
    assert b["reason"] is None and b["event_ts"] == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert (b["item_id"], b["query"]) == (None, "red shoes")  # a search needs no item
    assert (rows["c"]["reason"], rows["c"]["reason_field"]) == ("missing_field", "item_id")
    assert (rows["d"]["reason"], rows["d"]["reason_field"]) == ("future_timestamp", "event_ts")  # 1 s past skew
    # the first failing rule wins (negative price before bad quantity); a quarantined line keeps no typed field
    assert (rows["e"]["reason"], rows["e"]["reason_field"], rows["e"]["event_id"]) == ("negative_price", "price", None)
