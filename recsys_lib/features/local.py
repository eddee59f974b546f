"""The driver-local engine: fold and merge small batches in Arrow and pandas, without a Spark job.

A streaming micro-batch of a few thousand events spent about 6 s in some 50
Spark jobs (scheduling, not work). For batches of up to
``streaming.local_max_events`` new events the stream folds and merges here
instead, on the driver, from the same definitions:

* :func:`fold_local` is :func:`recsys_lib.features.fold.fold` for an Arrow table
  of events (the same formulas; decayed sums equal up to rounding);
* :func:`overlay_local` is :func:`recsys_lib.features.layers.overlay` followed by
  :func:`~recsys_lib.features.layers.as_pending`: the merge of each column follows
  its :class:`~recsys_lib.features.definitions.Merge` rule;
* sketches are Apache DataSketches HLL_8 sketches, byte for byte what Spark's
  ``hll_sketch_agg`` and ``hll_union`` produce.

Rows come out in the pending layer (``key_bucket = -1``). The two engines are
checked against each other in ``tests/spark/test_local_engine.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import datasketches as ds
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys_lib.core.config import FeaturesConfig
from recsys_lib.core.schema import EVENT_TYPES
from recsys_lib.features.definitions import BUCKET, ITEM, USER, USER_CATEGORY, Entity, Merge, decayed_name
from recsys_lib.features.layers import PENDING
from recsys_lib.lake.files import spark_to_arrow

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_EVENT_COLUMNS = ("event_id", "user_id", "event_type", "item_id", "category_id", "price", "quantity")


class LocalEvents:
    """A batch of events prepared once for every entity's fold (read-only, so shared across threads).

    Besides the columns a fold reads, the frame holds integer codes: ``_user_id``,
    ``_item_id``, ``_category_id`` and ``_event_id`` number the distinct values in
    their sort order (-1 for null), and ``_type`` is the index in ``EVENT_TYPES``.
    Grouping and sorting run on the codes; ``names`` maps them back.
    """

    def __init__(self, events: pa.Table) -> None:
        df = events.select(list(_EVENT_COLUMNS)).to_pandas()
        df["_us"] = events.column("event_ts").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
        self.names: dict[str, np.ndarray] = {}
        for name in ("user_id", "item_id", "category_id", "event_id"):
            df[f"_{name}"], self.names[name] = _sorted_codes(events.column(name))
        df["_type"] = pc.fill_null(pc.index_in(events.column("event_type"), value_set=pa.array(EVENT_TYPES)),
                                   -1).to_numpy()
        self.frame = df


def _sorted_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Each value's position among the distinct values in sort order (-1 for null), and those values."""
    distinct = pc.unique(pc.drop_null(column))
    distinct = distinct.take(pc.sort_indices(distinct))
    codes = pc.fill_null(pc.index_in(column, value_set=distinct), -1)
    return codes.to_numpy().astype(np.int64), np.array(distinct.to_pylist(), dtype=object)


def fold_local(events: pa.Table | LocalEvents, entity: Entity, fc: FeaturesConfig, updated_at: datetime) -> pa.Table:
    """The state of every key of ``entity`` after folding ``events`` (an ``events``-shaped Arrow table)."""
    prepared = events if isinstance(events, LocalEvents) else LocalEvents(events)
    df = prepared.frame
    if entity.name == ITEM:
        df = df[df["_item_id"].to_numpy() >= 0]
    if entity.name == USER_CATEGORY:
        df = df[df["_category_id"].to_numpy() >= 0]
    keys = [f"_{k}" for k in entity.keys]
    df = df.assign(_as_of=df.groupby(keys, sort=False)["_us"].transform("max"))
    states = _counts_and_decays(df, keys, fc)
    built: dict[str, pa.Array] = {}
    if entity.name == USER:
        states = states.join(_purchases(df)).sort_index()  # by user code: the lists below line up
        users = states.index.to_numpy()
        built["recent_items"] = _recent_items(df, fc.recent_items, prepared.names, users)
        built["category_weights"] = _category_weights(df, fc, prepared.names, users)
    if entity.name == ITEM:
        states["latest_category"] = _latest(df, "category_id").reindex(states.index)
        states["latest_price"] = _latest(df, "price").reindex(states.index)
        states["users_hll"] = _sketches(df, fc.hll_lg_k).reindex(states.index)
    states = states.reset_index()
    for key in entity.keys:
        states[key] = prepared.names[key][states[f"_{key}"].to_numpy()]
    return _to_arrow(states, entity, updated_at, built)


def overlay_local(pending: pa.Table, changes: pa.Table, entity: Entity, fc: FeaturesConfig,
                  updated_at: datetime) -> pa.Table:
    """The pending layer ``pending`` with the states ``changes`` merged in key by key.

    Keys only in ``pending`` keep their rows; keys in both are merged and stamped
    ``updated_at``; keys only in ``changes`` are added. Every row is in the pending bucket.
    """
    schema = spark_to_arrow(entity.schema)
    pending = pending.select(schema.names).cast(schema)
    changes = changes.select(schema.names).cast(schema)
    pending_keys, change_keys = _key_column(pending, entity), _key_column(changes, entity)
    touched = pc.is_in(pending_keys, value_set=change_keys)
    in_both = pc.is_in(change_keys, value_set=pending_keys)
    stored = {tuple(r[k] for k in entity.keys): r for r in pending.filter(touched).to_pylist()}
    merges = {c.name: _ROW_MERGES[c.kind] for c in entity.columns}
    merged = [_merge_row(stored[tuple(r[k] for k in entity.keys)], r, entity, merges)
              for r in changes.filter(in_both).to_pylist()]
    for row in merged:
        row["updated_at"], row[BUCKET] = updated_at, PENDING
    added = changes.filter(pc.invert(in_both))  # keys new to the layer keep their batch state
    added = added.set_column(added.schema.get_field_index("updated_at"), schema.field("updated_at"),
                             pa.array([updated_at] * added.num_rows, schema.field("updated_at").type))
    added = added.set_column(added.schema.get_field_index(BUCKET), schema.field(BUCKET),
                             pa.array([PENDING] * added.num_rows, pa.int32()))
    return pa.concat_tables([pending.filter(pc.invert(touched)), added, pa.Table.from_pylist(merged, schema)])


# -- fold ---------------------------------------------------------------------------------------------------


def _seconds(micros: Any) -> Any:
    """Epoch microseconds as fractional seconds, as Spark's ``unix_micros(ts) / 1e6``."""
    return micros / 1_000_000.0


def _factor(df: pd.DataFrame, half_life: float, as_of: str = "_as_of") -> np.ndarray:
    """``2^-((as_of - ts) / H)`` per event."""
    return np.power(2.0, -(_seconds(df[as_of].to_numpy()) - _seconds(df["_us"].to_numpy())) / half_life)


def _counts_and_decays(df: pd.DataFrame, keys: list[str], fc: FeaturesConfig) -> pd.DataFrame:
    """Per key: ``_as_of_us``, the count and the decayed sums of every event type."""
    work = {k: df[k] for k in keys}
    work["_as_of_us"] = df["_us"]
    factors = {h: _factor(df, h) for h in fc.half_lives}
    types = df["_type"].to_numpy()
    for index, etype in enumerate(EVENT_TYPES):
        is_type = types == index
        work[f"{etype}_count"] = is_type.astype(np.int64)
        for h, factor in factors.items():
            work[decayed_name(etype, h)] = np.where(is_type, factor, 0.0)
    grouped = pd.DataFrame(work).groupby(keys, sort=False)
    sums = grouped.sum()
    sums["_as_of_us"] = grouped["_as_of_us"].max()
    return sums


def _purchases(df: pd.DataFrame) -> pd.DataFrame:
    priced = (df["_type"].to_numpy() == EVENT_TYPES.index("purchase")) & df["price"].notna().to_numpy()
    price = df["price"].fillna(0.0).to_numpy(dtype=np.float64)
    quantity = df["quantity"].fillna(1).to_numpy(dtype=np.float64)
    work = pd.DataFrame({
        "_user_id": df["_user_id"], "purchase_spend": np.where(priced, price * quantity, 0.0),
        "purchase_price_sum": np.where(priced, price, 0.0), "purchase_priced_count": priced.astype(np.int64)})
    return work.groupby("_user_id", sort=False).sum()


def _per_user(owners: np.ndarray, users: np.ndarray, n_codes: int) -> pa.Array:
    """List offsets for entries sorted by owner code, one list per code of ``users`` (ascending)."""
    counts = np.bincount(owners, minlength=n_codes)[users]
    return pa.array(np.r_[0, np.cumsum(counts)], pa.int32())


def _recent_items(df: pd.DataFrame, limit: int, names: dict[str, np.ndarray], users: np.ndarray) -> pa.Array:
    """For each of ``users`` (codes, ascending), the newest entry of each of its ``limit`` most recent items."""
    with_item = df[df["_item_id"].to_numpy() >= 0]
    owners, items = with_item["_user_id"].to_numpy(), with_item["_item_id"].to_numpy()
    # by user, then newest first (ties: the larger event_id, then the larger item_id)
    order = np.lexsort((-items, -with_item["_event_id"].to_numpy(), -with_item["_us"].to_numpy(), owners))
    owners, items = owners[order], items[order]
    first_of_pair = ~pd.Series(owners * (len(names["item_id"]) + 1) + items).duplicated().to_numpy()
    rows = order[first_of_pair]
    rows = rows[pd.Series(owners[first_of_pair]).groupby(owners[first_of_pair], sort=False).cumcount().to_numpy()
                < limit]
    entries = pa.StructArray.from_arrays(
        [pa.array(with_item["_us"].to_numpy()[rows], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
         pa.array(with_item["event_id"].to_numpy()[rows], pa.string()),
         pa.array(names["item_id"][with_item["_item_id"].to_numpy()[rows]], pa.string())],
        names=["ts", "event_id", "item_id"])
    offsets = _per_user(with_item["_user_id"].to_numpy()[rows], users, len(names["user_id"]))
    return pa.ListArray.from_arrays(offsets, entries)


def _category_weights(df: pd.DataFrame, fc: FeaturesConfig, names: dict[str, np.ndarray],
                      users: np.ndarray) -> pa.Array:
    """For each of ``users`` (codes, ascending): category -> sum of type weight x 2^-((user as_of - ts) / H)."""
    with_category = df[df["_category_id"].to_numpy() >= 0]
    by_type = np.array([fc.affinity_weights.get(t, 0.0) for t in EVENT_TYPES] + [0.0])  # index -1: unknown
    weight = by_type[with_category["_type"].to_numpy()]
    terms = pd.DataFrame({"_user_id": with_category["_user_id"], "_category_id": with_category["_category_id"],
                          "w": weight * _factor(with_category, fc.affinity_half_life)})
    sums = terms.groupby(["_user_id", "_category_id"], sort=True)["w"].sum()
    offsets = _per_user(sums.index.get_level_values(0).to_numpy(), users, len(names["user_id"]))
    categories = pa.array(names["category_id"][sums.index.get_level_values(1).to_numpy()], pa.string())
    return pa.MapArray.from_arrays(offsets, categories, pa.array(sums.to_numpy(), pa.float64()))


def _latest(df: pd.DataFrame, column: str) -> pd.Series:
    """Per item, (ts, event_id, value) of its latest event (by ts, then event_id) with a ``column`` value."""
    rows = df[df[column].notna().to_numpy()]
    rows = rows.iloc[np.lexsort((-rows["_event_id"].to_numpy(), -rows["_us"].to_numpy()))]
    rows = rows[~rows["_item_id"].duplicated().to_numpy()]
    return pd.Series({item: {"ts": _timestamp(us), "event_id": eid, "value": value}
                      for item, us, eid, value in zip(rows["_item_id"], rows["_us"], rows["event_id"], rows[column],
                                                      strict=True)}, dtype=object)


def _sketches(df: pd.DataFrame, lg_k: int) -> pd.Series:
    """Per item, the serialized HLL_8 sketch of its users (Spark's ``hll_sketch_agg`` bytes).

    A repeated (item, user) pair changes nothing in a sketch, so only the first is added.
    """
    pairs = df[~df.duplicated(["_item_id", "_user_id"]).to_numpy()]
    if pairs.empty:
        return pd.Series({}, dtype=object)
    order = np.argsort(pairs["_item_id"].to_numpy(), kind="stable")  # by item, users in their event order
    items, users = pairs["_item_id"].to_numpy()[order], pairs["user_id"].to_numpy()[order]
    bounds = np.r_[np.flatnonzero(np.r_[True, items[1:] != items[:-1]]), len(items)]
    out = {}
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        sketch = ds.hll_sketch(lg_k, ds.tgt_hll_type.HLL_8)
        for user in users[start:stop]:
            sketch.update(user)
        out[items[start]] = sketch.serialize_updatable()
    return pd.Series(out, dtype=object)


def _timestamp(micros: int) -> datetime:
    return _EPOCH + int(micros) * _US


def _to_arrow(states: pd.DataFrame, entity: Entity, updated_at: datetime, built: dict[str, pa.Array]) -> pa.Table:
    """``states`` as the entity's Arrow table; columns in ``built`` are already Arrow arrays in row order."""
    schema = spark_to_arrow(entity.schema)
    n = len(states)
    as_of = pa.array(states["_as_of_us"].to_numpy(dtype=np.int64), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    columns: dict[str, Any] = {"as_of": as_of, "last_event_ts": as_of, "updated_at": [updated_at] * n,
                               BUCKET: [PENDING] * n}
    for field in schema:
        if field.name in columns:
            continue
        if field.name in built:
            columns[field.name] = built[field.name].cast(field.type)
            continue
        values = states[field.name]
        if values.dtype == object:
            values = [None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in values]
        columns[field.name] = pa.array(values, field.type) if not isinstance(values, pa.Array) else values
    return pa.table({f.name: columns[f.name] for f in schema}, schema=schema)


# -- merge --------------------------------------------------------------------------------------------------


def _key_column(table: pa.Table, entity: Entity) -> pa.Array:
    """One string per row identifying its key (the key columns joined by a control character)."""
    if len(entity.keys) == 1:
        return pc.cast(table.column(entity.keys[0]), pa.string())
    parts = [pc.cast(table.column(k), pa.string()) for k in entity.keys]
    return pc.binary_join_element_wise(*parts, "\u0000")


def _micros(ts: datetime | None) -> int | None:
    return None if ts is None else (ts - _EPOCH) // _US


def _merge_row(left: dict[str, Any], right: dict[str, Any], entity: Entity,
               merges: dict[str, Callable[..., Any]]) -> dict[str, Any]:
    """Two states of one key merged column by column (both sides present)."""
    lu, ru = _micros(left["as_of"]), _micros(right["as_of"])
    as_of_s = max(_seconds(u) for u in (lu, ru) if u is not None)
    sides = (_seconds(lu) if lu is not None else None, _seconds(ru) if ru is not None else None, as_of_s)
    out = {k: left[k] for k in entity.keys if k in left}  # stored online values carry no keys
    for column in entity.columns:
        out[column.name] = merges[column.name](left[column.name], right[column.name], column.param, sides)
    return out


def _decay_factor(side_s: float | None, as_of_s: float, half_life: float) -> float | None:
    return None if side_s is None else 2.0 ** (-(as_of_s - side_s) / half_life)


def _merge_max(a: Any, b: Any, _p: float, _s: tuple) -> Any:
    present = [v for v in (a, b) if v is not None]
    if not present:
        return None
    return max(present, key=lambda v: tuple(v.values()) if isinstance(v, dict) else v)


def _merge_sum(a: Any, b: Any, _p: float, _s: tuple) -> Any:
    return (a or 0) + (b or 0)


def _merge_decay(a: float | None, b: float | None, half_life: float, sides: tuple) -> float:
    left_s, right_s, as_of_s = sides
    fl, fr = _decay_factor(left_s, as_of_s, half_life), _decay_factor(right_s, as_of_s, half_life)
    return (a * fl if a is not None and fl is not None else 0.0) + (b * fr if b is not None and fr is not None else 0.0)


def _merge_hll(a: bytes | None, b: bytes | None, _p: float, _s: tuple) -> bytes | None:
    if a is None or b is None:
        return a if b is None else b
    left, right = ds.hll_sketch.deserialize(a), ds.hll_sketch.deserialize(b)
    union = ds.hll_union(min(left.lg_config_k, right.lg_config_k))
    union.update(left)
    union.update(right)
    return union.get_result(ds.tgt_hll_type.HLL_8).serialize_updatable()


def _merge_recent(a: list | None, b: list | None, limit: float, _s: tuple) -> list:
    entries = sorted([*(a or []), *(b or [])], key=lambda e: (e["ts"], e["event_id"], e["item_id"]), reverse=True)
    seen: set[str] = set()
    kept = []
    for entry in entries:
        if entry["item_id"] not in seen:
            seen.add(entry["item_id"])
            kept.append(entry)
    return kept[: int(limit)]


def _merge_map_decay(a: list | None, b: list | None, half_life: float, sides: tuple) -> list:
    left_s, right_s, as_of_s = sides
    fl, fr = _decay_factor(left_s, as_of_s, half_life), _decay_factor(right_s, as_of_s, half_life)
    left, right = dict(a or []), dict(b or [])
    out = []
    for key in dict.fromkeys([*left, *right]):
        x, y = left.get(key), right.get(key)
        out.append((key, (x * fl if x is not None and fl is not None else 0.0)
                    + (y * fr if y is not None and fr is not None else 0.0)))
    return out


_ROW_MERGES: dict[Merge, Callable[..., Any]] = {
    Merge.MAX: _merge_max, Merge.SUM: _merge_sum, Merge.DECAY: _merge_decay, Merge.HLL_UNION: _merge_hll,
    Merge.RECENT: _merge_recent, Merge.MAP_DECAY: _merge_map_decay,
}


def merge_states(left: dict[str, Any], right: dict[str, Any], entity: Entity) -> dict[str, Any]:
    """Two states of one key (rows as ``to_pylist`` gives them) merged by each column's :class:`Merge` rule.

    Serving merges a key's base and pending rows with it, as :func:`~recsys_lib.features.layers.read_states`
    does in Spark; ``updated_at`` is the later of the two.
    """
    merged = _merge_row(left, right, entity, {c.name: _ROW_MERGES[c.kind] for c in entity.columns})
    stamps = [s for s in (left.get("updated_at"), right.get("updated_at")) if s is not None]
    merged["updated_at"] = max(stamps) if stamps else None
    return merged
