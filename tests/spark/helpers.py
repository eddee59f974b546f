"""Shared helpers of the Spark tests: tiny inline events, raw lines, state comparison."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from recsys_lib.core.schema import EVENTS_SCHEMA

T0 = datetime(2024, 1, 1)


def event(eid, user, etype, ts, item=None, category=None, price=None, quantity=None):
    when = T0 + ts if isinstance(ts, timedelta) else ts
    return (eid, when, user, etype, item, category, price, quantity, None, None, "f", "run", T0, when.date())


def events_df(spark, rows):
    return spark.createDataFrame(rows, EVENTS_SCHEMA)




def stored_states(lake, entity, fc):
    """A feature table as readers see it (base merged with the pending layer), by key."""
    from recsys_lib.features.layers import read_states

    return by_key(read_states(lake, entity, fc), entity)


def pending_rows(lake, entity):
    """Rows in a feature table's pending layer."""
    from recsys_lib.features.definitions import BUCKET
    from recsys_lib.features.layers import PENDING

    return lake.read(entity.table, partitions=(BUCKET, [PENDING])).count()


def by_key(df, entity):
    return {tuple(r[k] for k in entity.keys): r.asDict(recursive=True) for r in df.collect()}


def assert_same_state(full, merged, entity):
    assert full.keys() == merged.keys()
    for key, want in full.items():
        got = merged[key]
        for column in entity.columns:
            a, b = want[column.name], got[column.name]
            if column.name == "users_hll":
                continue  # compared through its estimate below
            if isinstance(a, float):
                assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-300), (key, column.name, a, b)
            elif column.name == "category_weights":
                assert a.keys() == b.keys(), (key, column.name)
                for k in a:
                    assert math.isclose(a[k], b[k], rel_tol=1e-9), (key, column.name, k)
            else:
                assert a == b, (key, column.name, a, b)


def write_lines(folder, name, lines):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n")


def raw_line(eid, user, etype, ts, item="i1", cat="c1", price=None):
    price_part = f',"price":{price}' if price is not None else ""
    return (f'{{"event_id":"{eid}","event_ts":"{ts}","user_id":"{user}","event_type":"{etype}",'
            f'"item_id":"{item}","category_id":"{cat}"{price_part}}}')


def files_holding(root, needles):
    """Files under ``root`` holding any needle: in their raw bytes, a ``.gz`` file's inflated bytes,
    or a Parquet file's decoded values. Returns ``"<path> holds '<needle>'"`` lines."""
    import gzip
    import json
    from pathlib import Path

    import pyarrow.parquet as pq

    hits = []
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".gz":
            data += gzip.decompress(data)
        text = data.decode("utf-8", errors="replace")
        if path.suffix == ".parquet":
            text += json.dumps(pq.read_table(path).to_pylist(), default=str)
        hits += [f"{path} holds {n!r}" for n in needles if n in text or n.encode() in data]
    return hits
