"""Compact, typed row values: Arrow rows as msgpack arrays, decoded back as Arrow's ``to_pylist`` gives them.

A value is the msgpack array ``[schema_id, v1, v2, ...]`` of a row's columns in
schema order. Names are not repeated per row: ``schema_id`` is a short digest
of the column names and types, and a reader with another schema gets a
:class:`SchemaMismatch` instead of misread values. Types map as follows:

* timestamps: integer microseconds since the epoch (decoded to aware UTC datetimes);
* structs: arrays of their fields in order (decoded to dicts);
* lists: arrays; maps: arrays of ``[key, value]`` pairs (decoded to lists of tuples);
* numbers, strings, bytes and nulls: themselves.

Encoding converts column by column (Arrow compute and ``to_pylist`` on primitive
columns), so bulk loads do not build a Python object per cell twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgpack
import pyarrow as pa
import pyarrow.compute as pc

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SchemaMismatch(ValueError):
    """A stored value was written with other columns than the reader expects."""


def schema_id(schema: pa.Schema) -> str:
    """An 8-hex-digit digest of the columns' names and types."""
    text = ";".join(f"{f.name}:{f.type}" for f in schema)
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def _plain(array: pa.Array) -> list[Any]:
    """A column as msgpack-able Python values (see the module docstring)."""
    t = array.type
    if pa.types.is_timestamp(t):
        return pc.cast(array, pa.timestamp("us", tz=t.tz)).cast(pa.int64()).to_pylist()
    if pa.types.is_struct(t):
        rows = list(zip(*[_plain(array.field(i)) for i in range(t.num_fields)], strict=True))  # tuples pack as arrays
        if array.null_count == 0:
            return rows
        return [vals if ok else None for ok, vals in zip(array.is_valid().to_pylist(), rows, strict=True)]
    if pa.types.is_map(t):
        entries = _values(array)
        return _regroup(array, list(zip(_plain(entries.field(0)), _plain(entries.field(1)), strict=True)))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _regroup(array, _plain(_values(array)))
    return array.to_pylist()


def _values(array: Any) -> Any:
    """The child values a list or map column's offsets point into (null slots included)."""
    offsets = array.offsets
    first, last = offsets[0].as_py(), offsets[-1].as_py()
    return array.values.slice(first, last - first)


def _regroup(array: Any, flat: list[Any]) -> list[Any]:
    """Cut ``flat`` (the values from :func:`_values`) back into the rows of ``array``."""
    offsets = array.offsets.to_pylist()
    valid = array.is_valid().to_pylist()
    base = offsets[0]
    return [flat[offsets[i] - base:offsets[i + 1] - base] if valid[i] else None for i in range(len(array))]


def encode_table(table: pa.Table, columns: Sequence[str]) -> list[bytes]:
    """One value per row of ``table``: its ``columns`` packed (see the module docstring)."""
    sid = schema_id(table.select(list(columns)).schema)
    combined = table.select(list(columns)).combine_chunks()
    plain = [_plain(combined.column(c).chunk(0) if combined.column(c).num_chunks else
                    pa.array([], combined.schema.field(c).type)) for c in columns]
    pack = msgpack.Packer(use_bin_type=True).pack
    return [pack([sid, *row]) for row in zip(*plain, strict=True)] if plain else []


def decoder(schema: pa.Schema) -> Callable[[bytes], dict[str, Any]]:
    """A function from a value to the row as a dict, as ``pa.Table.to_pylist`` would give it.

    Raises:
        SchemaMismatch: (when called) If the value was written with other columns.

    """
    sid = schema_id(schema)
    converters = [(f.name, _converter(f.type)) for f in schema]

    def decode(value: bytes) -> dict[str, Any]:
        row = msgpack.unpackb(value, raw=False)
        if row[0] != sid:
            raise SchemaMismatch(f"stored value has schema {row[0]}, expected {sid} ({', '.join(schema.names)}): "
                                 "the feature definitions changed; run `recsys online sync --full`")
        return {name: conv(v) for (name, conv), v in zip(converters, row[1:], strict=True)}

    return decode


def _converter(t: pa.DataType) -> Callable[[Any], Any]:
    if pa.types.is_timestamp(t):
        return lambda v: None if v is None else _EPOCH + timedelta(microseconds=v)
    if pa.types.is_struct(t):
        fields = [(t.field(i).name, _converter(t.field(i).type)) for i in range(t.num_fields)]
        return lambda v: None if v is None else {n: c(x) for (n, c), x in zip(fields, v, strict=True)}
    if pa.types.is_map(t):
        key, item = _converter(t.key_type), _converter(t.item_type)
        return lambda v: None if v is None else [(key(k), item(x)) for k, x in v]
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = _converter(t.value_type)
        return lambda v: None if v is None else [inner(x) for x in v]
    return lambda v: v
