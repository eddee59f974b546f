"""Both online store backends pass the same contract: version guard, generations, TTL, purchases."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from recsys_lib.online import Layer
from recsys_lib.online.codec import SchemaMismatch, decoder, encode_table

pytestmark = pytest.mark.serving

T = "user_features"


def test_codec_round_trips_every_type_the_feature_tables_use():
    schema = pa.schema([
        ("as_of", pa.timestamp("us", tz="UTC")), ("n", pa.int64()), ("x", pa.float64()), ("s", pa.string()),
        ("blob", pa.binary()),
        ("latest", pa.struct([("ts", pa.timestamp("us", tz="UTC")), ("event_id", pa.string()),
                              ("value", pa.float64())])),
        ("recent", pa.list_(pa.struct([("ts", pa.timestamp("us", tz="UTC")), ("item_id", pa.string())]))),
        ("weights", pa.map_(pa.string(), pa.float64())),
    ])
    t0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    rows = [
        {"as_of": t0, "n": 3, "x": 0.1 + 0.2, "s": "é", "blob": b"\x00\x01",
         "latest": {"ts": t0, "event_id": "e1", "value": 9.5}, "recent": [{"ts": t0, "item_id": "i1"}],
         "weights": [("c1", 2.5), ("c2", 1e-300)]},
        {"as_of": None, "n": None, "x": None, "s": None, "blob": None, "latest": None, "recent": None,
         "weights": None},
        {"as_of": t0, "n": -1, "x": float("inf"), "s": "", "blob": b"", "latest": {"ts": None, "event_id": None,
                                                                                  "value": None},
         "recent": [], "weights": []},
    ]
    table = pa.Table.from_pylist(rows, schema).slice(0)  # chunked as Arrow gives it
    values = encode_table(table, schema.names)
    decode = decoder(schema)
    assert [decode(v) for v in values] == table.to_pylist()
    assert len(values[0]) < 150  # names are not repeated per row
    with pytest.raises(SchemaMismatch, match="feature definitions changed"):
        decoder(pa.schema([("n", pa.int64())]))(values[0])


def test_an_older_version_never_overwrites_a_newer_one(store):
    store.write(T, Layer.BASE, [("u1", b"v5", None)], 5)
    assert store.write(T, Layer.BASE, [("u1", b"v3", None)], 3) == 0
    assert store.write(T, Layer.BASE, [("u1", b"v5-again", None)], 5) == 0
    row = store.read(T, ["u1"])[0]
    assert (row.base, row.base_version, row.pending, row.pending_version) == (b"v5", 5, None, -1)
    store.write(T, Layer.PENDING, [("u1", b"p7", None)], 7)
    store.write(T, Layer.BASE, [("u1", b"v6", None)], 6)
    row = store.read(T, ["u1"])[0]
    assert (row.base, row.base_version, row.pending, row.pending_version) == (b"v6", 6, b"p7", 7)


def test_a_delete_leaves_a_tombstone_that_older_writes_cannot_pass(store):
    store.write(T, Layer.PENDING, [("u1", b"p4", None), ("u2", b"p4", None)], 4)
    store.write(T, Layer.PENDING, [("u1", None, None)], 6)
    store.write(T, Layer.PENDING, [("u1", b"stale", None)], 5)  # a delayed replay of an older batch
    assert store.read(T, ["u1", "u2", "nobody"]) == [None, store.read(T, ["u2"])[0], None]
    assert store.read(T, ["u2"])[0].pending == b"p4"


def test_concurrent_readers_never_see_half_a_generation_or_a_mix(store):
    keys = [f"u{i}" for i in range(300)]
    store.write(T, Layer.BASE, [(k, b"g1", None) for k in keys], 1, generation=store.generation())
    stop, seen, errors = threading.Event(), set(), []

    def reader():
        while not stop.is_set():
            rows = store.read(T, keys)
            values = {r.base if r else None for r in rows}
            if len(values) != 1:
                errors.append(values)
            seen.update(values)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for n in range(2, 6):
        gen = store.new_generation()
        for start in range(0, len(keys), 50):  # loaded in parts, as a bulk load does
            store.write(T, Layer.BASE, [(k, f"g{n}".encode(), None) for k in keys[start:start + 50]], n,
                        generation=gen, fresh=True)
            time.sleep(0.002)
        store.set_applied(T, n, gen)
        store.activate(gen)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert store.read(T, ["u0"])[0].base == b"g5" and store.applied_version(T) == 5
    assert b"g1" in seen and len(seen) >= 2


def test_replaced_generations_are_dropped_after_the_grace_period(store):
    first = store.new_generation()
    store.write(T, Layer.BASE, [("u1", b"a", None)], 1, generation=first)
    store.activate(first)
    second = store.new_generation()
    store.activate(second)
    third = store.new_generation()
    store.activate(third)  # grace 0: the first is gone; the second, replaced just now, stays for its readers
    assert store.stats()["generations"] == [second, third]
    assert list(store.scan(T, generation=first)) == []
    fourth = store.new_generation()
    store.activate(fourth)
    assert store.stats()["generations"] == [third, fourth]


def test_an_expired_row_reads_as_absent_not_stale(store):
    now = time.time()
    store.write(T, Layer.BASE, [("old", b"x", now - 1), ("fresh", b"y", now + 60), ("forever", b"z", None)], 1)
    got = store.read(T, ["old", "fresh", "forever"])
    assert got[0] is None and got[1].base == b"y" and got[2].base == b"z"
    assert sorted(k for k, _ in store.scan(T)) == ["forever", "fresh"]


def test_applied_versions_purchases_and_watermark_only_move_forward(store):
    store.set_applied(T, 7)
    store.set_applied(T, 3)
    assert store.applied_version(T) == 7 and store.applied_version("item_features") == -1
    store.add_purchases([("u1", "i1"), ("u1", "i2"), ("u2", "i1")], 4)
    store.add_purchases([("u1", "i1")], 2)
    assert store.purchases(["u1", "u2", "u3"]) == {"u1": {"i1", "i2"}, "u2": {"i1"}}
    assert store.purchases_version() == 4
    store.raise_watermark(100)
    store.raise_watermark(50)
    assert store.watermark() == 100
    stats = store.stats()
    assert stats["backend"] == store.backend and stats["purchases_users"] == 2 and stats["bytes"] > 0


def test_deleting_keys_removes_them_from_every_generation(store):
    gen = store.new_generation()
    store.write(T, Layer.BASE, [("u1", b"a", None), ("u2", b"b", None)], 1, generation=gen)
    store.activate(gen)
    store.write(T, Layer.PENDING, [("u1", b"p", None)], 2)
    store.delete_keys(T, ["u1"])
    assert store.read(T, ["u1", "u2"])[0] is None and store.read(T, ["u2"])[0].base == b"b"
