"""The canonical-line lane: validate well-formed, compact event lines in bulk with Arrow.

Almost every line a producer writes has the same shape: a compact JSON object
with the schema's fields in schema order, plain strings without escapes, a
known event type, and a timestamp as epoch milliseconds or canonical ISO-8601.
Such a line is recognised by one anchored regular expression (RE2, run by Arrow
over the whole batch), parsed by Arrow's JSON reader, and validated with
vectorised compute: no Python per line.

Only rules that such a line can still fail are checked here, in the order of
:mod:`recsys_lib.ingest.validate` (``item_id`` missing for a non-search event,
future timestamp, ``too_late``, negative price, quantity below 1). Every other
line (escapes, other key orders, extra keys, spaces, objects in text fields,
unusual timestamps, invalid calendar dates, oversized lines) is returned
untouched for the exact per-line lane (:mod:`recsys_lib.ingest.local_validate`).
``tests/spark/test_local_ingest.py`` checks both lanes against Spark's
``classify``.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from recsys_lib.core.schema import CORRUPT_COLUMN, EVENT_TYPES, OPTIONAL_TEXT_FIELDS, RAW_RECORD_SCHEMA, Reason
from recsys_lib.lake.files import spark_to_arrow

_CHAR = r'[^"\\\x00-\x1f]'
#: A string whose first character is not a space, "{" or "[": neither blank nor ill_typed.
_PLAIN = r'"[^"\\\x00-\x1f {\[]' + _CHAR + r'*"'
_PLAIN_OR_EMPTY = r'(?:null|"(?:[^"\\\x00-\x1f {\[]' + _CHAR + r'*)?")'
_EPOCH = r"(?:0|[1-9][0-9]{0,14})"
_ISO = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-](?:0[0-9]|1[0-7]):[0-5][0-9])"
#: A JSON number without exponent, but not "-0": Spark reads that integer token as 0.0, Arrow as -0.0.
_NUMBER = r"(?:-?[1-9][0-9]{0,15}(?:\.[0-9]{1,17})?|-?0\.[0-9]{1,17}|0)"
_INTEGER = r"-?(?:0|[1-9][0-9]{0,17})"


def _field(name: str, value: str, *, first: bool = False, optional: bool = False) -> str:
    pattern = ("" if first else ", ?") + f'"{name}": ?(?:{value})'
    return f"(?:{pattern})?" if optional else pattern


#: One canonical line: the schema's fields in schema order; the optional ones may be absent.
CANONICAL_LINE = (
    r"^\{"
    + _field("event_id", _PLAIN, first=True)
    + _field("event_ts", f'{_EPOCH}|"{_EPOCH}"|"{_ISO}"')
    + _field("user_id", _PLAIN)
    + _field("event_type", "|".join(f'"{t}"' for t in EVENT_TYPES))
    + _field("item_id", _PLAIN_OR_EMPTY, optional=True)
    + _field("category_id", _PLAIN_OR_EMPTY, optional=True)
    + _field("price", f"null|{_NUMBER}", optional=True)
    + _field("quantity", f"null|{_INTEGER}", optional=True)
    + _field("session_id", _PLAIN_OR_EMPTY, optional=True)
    + _field("query", _PLAIN_OR_EMPTY, optional=True)
    + r"\}$"
)
#: The epoch-millisecond timestamp given as a JSON number, quoted so that Arrow reads ``event_ts`` as text.
_BARE_EPOCH = (r'^(\{"event_id": ?"[^"]*", ?"event_ts": ?)(' + _EPOCH + ")", r'\1"\2"')
_ISO_PARTS = r"^(?:\.(?P<fraction>[0-9]{1,6}))?(?P<zone>.*)$"
#: The raw record's fields as Arrow reads them (the schema Spark's ``from_json`` uses, less its corrupt column).
_JSON_SCHEMA = spark_to_arrow(RAW_RECORD_SCHEMA).remove(RAW_RECORD_SCHEMA.fieldNames().index(CORRUPT_COLUMN))
_US = pa.timestamp("us", tz="UTC")


def classify_canonical(raw: pa.Table, *, max_line_bytes: int, latest: datetime,
                       earliest: datetime | None) -> tuple[pa.Table, pa.Table]:
    """Classify the canonical lines of ``raw`` (columns ``value``, ``source_file``).

    Args:
        raw: The lines.
        max_line_bytes: Longer lines are left to the exact lane (``oversized_line``).
        latest: Events after this are ``future_timestamp``.
        earliest: Events before this are ``too_late`` (None: no limit).

    Returns:
        The classified canonical lines (the columns of
        :data:`~recsys_lib.ingest.local_validate.CLASSIFIED_SCHEMA`, in its order) and the
        other lines of ``raw``, untouched.

    """
    values = raw.column("value")
    raw_bytes = pc.binary_length(values)
    canonical = pc.and_(pc.less_equal(raw_bytes, max_line_bytes),
                        pc.match_substring_regex(values, CANONICAL_LINE))
    lines = raw.append_column("raw_bytes", pc.cast(raw_bytes, pa.int64())).filter(canonical)
    if lines.num_rows:
        parsed = _parse(lines.column("value"))
        ts, calendar_ok = _timestamps(parsed.column("event_ts"))
        lines, parsed, ts = lines.filter(calendar_ok), parsed.filter(calendar_ok), ts.filter(calendar_ok)
        canonical = _mark_decided(canonical, calendar_ok)
    else:
        parsed, ts = _JSON_SCHEMA.empty_table(), pa.array([], _US)
    rest = raw.filter(pc.invert(canonical))
    return _classified(lines, parsed, ts, latest, earliest), rest


def _parse(values: pa.ChunkedArray) -> pa.Table:
    """Arrow's JSON reader over the lines (each known to be a canonical object)."""
    quoted = pc.replace_substring_regex(values, _BARE_EPOCH[0], _BARE_EPOCH[1])
    table = pj.read_json(io.BytesIO(_newline_joined(quoted)), read_options=pj.ReadOptions(block_size=1 << 22),
                         parse_options=pj.ParseOptions(explicit_schema=_JSON_SCHEMA,
                                                       unexpected_field_behavior="error"))
    if table.num_rows != len(values):
        raise ValueError(f"Arrow's JSON reader returned {table.num_rows} rows for {len(values)} canonical lines")
    return table


def _newline_joined(values: pa.ChunkedArray) -> bytes:
    """The strings' UTF-8 bytes, each followed by a newline, read straight from Arrow's buffers."""
    parts = []
    text_type = values.type
    for chunk in pc.binary_join_element_wise(values, pa.scalar("", text_type), pa.scalar("\n", text_type)).chunks:
        width = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
        offsets = np.frombuffer(chunk.buffers()[1], width)[chunk.offset:chunk.offset + len(chunk) + 1]
        parts.append(chunk.buffers()[2].to_pybytes()[offsets[0]:offsets[-1]])
    return b"".join(parts)


def _timestamps(text: pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """``event_ts`` as UTC microseconds, and whether each ISO date and time exists in the calendar.

    An impossible date or time (30 February, hour 24, second 60) is left to the exact lane.
    """
    text = text.combine_chunks()
    epoch = pc.match_substring_regex(text, f"^{_EPOCH}$")
    millis = pc.cast(pc.if_else(epoch, text, "0"), pa.int64()).to_numpy(zero_copy_only=False)
    iso = pc.if_else(epoch, "1970-01-01T00:00:00Z", text)

    def part(start: int, stop: int) -> np.ndarray:
        return pc.cast(pc.utf8_slice_codeunits(iso, start, stop), pa.int64()).to_numpy(zero_copy_only=False)

    year, month, day, hour, minute, second = part(0, 4), part(5, 7), part(8, 10), part(11, 13), part(14, 16), \
        part(17, 19)
    tail = pc.extract_regex(pc.utf8_slice_codeunits(iso, 19), _ISO_PARTS)
    fraction = pc.utf8_rpad(pc.fill_null(pc.struct_field(tail, "fraction"), ""), 6, "0")
    micros = pc.cast(fraction, pa.int64()).to_numpy(zero_copy_only=False)
    zone = pc.struct_field(tail, "zone")
    offset_sign = np.where(pc.starts_with(zone, "-").to_numpy(zero_copy_only=False), -1, 1)
    zoned = pc.if_else(pc.equal(zone, "Z"), "+00:00", zone)
    offset_min = offset_sign * (pc.cast(pc.utf8_slice_codeunits(zoned, 1, 3), pa.int64()).to_numpy() * 60
                                + pc.cast(pc.utf8_slice_codeunits(zoned, 4, 6), pa.int64()).to_numpy())
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(month, 0, 12)] + (
        leap & (month == 2))
    calendar_ok = ((year >= 1) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days) & (hour <= 23)
                   & (minute <= 59) & (second <= 59))
    seconds = ((_days_from_civil(year, month, day) * 24 + hour) * 60 + minute - offset_min) * 60 + second
    us = np.where(epoch.to_numpy(zero_copy_only=False), millis * 1000, seconds * 1_000_000 + micros)
    return pa.array(us, pa.int64()).cast(_US), pa.array(calendar_ok)


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm)."""
    y = year - (month <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _mark_decided(canonical: pa.ChunkedArray | pa.Array, kept: pa.Array) -> pa.Array:
    """``canonical`` with the lines dropped from the canonical subset (``kept`` false) set to false."""
    mask = pc.fill_null(canonical, False).to_numpy(zero_copy_only=False).copy()
    mask[np.flatnonzero(mask)[~kept.to_numpy(zero_copy_only=False)]] = False
    return pa.array(mask)


def _classified(lines: pa.Table, parsed: pa.Table, ts: pa.Array, latest: datetime,
                earliest: datetime | None) -> pa.Table:
    """The rules a canonical line can still fail, in the order of ``validate._rules``; typed columns."""
    blank = {name: pc.fill_null(pc.equal(parsed.column(name), ""), True) for name in OPTIONAL_TEXT_FIELDS}
    price, quantity = parsed.column("price"), parsed.column("quantity")
    rules: list[tuple[pa.ChunkedArray | pa.Array, Reason, str]] = [
        (pc.and_(pc.not_equal(parsed.column("event_type"), "search"), blank["item_id"]),
         Reason.MISSING_FIELD, "item_id"),
        (pc.greater(ts, pa.scalar(latest, _US)), Reason.FUTURE_TIMESTAMP, "event_ts"),
    ]
    if earliest is not None:
        rules.append((pc.less(ts, pa.scalar(earliest, _US)), Reason.TOO_LATE, "event_ts"))
    rules += [(pc.fill_null(pc.less(price, 0.0), False), Reason.NEGATIVE_PRICE, "price"),
              (pc.fill_null(pc.less(quantity, 1), False), Reason.BAD_QUANTITY, "quantity")]
    reason = pa.nulls(lines.num_rows, pa.string())
    reason_field = pa.nulls(lines.num_rows, pa.string())
    for failing, code, name in reversed(rules):  # the first failing rule wins
        reason = pc.if_else(failing, code.value, reason)
        reason_field = pc.if_else(failing, name, reason_field)
    valid = pc.is_null(reason)

    def typed(column: pa.ChunkedArray | pa.Array, name: str | None = None) -> pa.Array:
        keep = valid if name is None else pc.and_(valid, pc.invert(blank[name]))
        return pc.if_else(keep, column, pa.nulls(len(column), column.type))

    columns = {
        "value": lines.column("value"), "source_file": lines.column("source_file"),
        "raw_bytes": lines.column("raw_bytes"), "reason": reason, "reason_field": reason_field,
        "event_id": typed(parsed.column("event_id")), "event_ts": typed(ts),
        "user_id": typed(parsed.column("user_id")), "event_type": typed(parsed.column("event_type")),
        **{name: typed(parsed.column(name), name) for name in ("item_id", "category_id")},
        "price": typed(price), "quantity": typed(quantity),
        **{name: typed(parsed.column(name), name) for name in ("session_id", "query")},
    }
    return pa.table(columns)


def window(now: datetime, max_future_skew_s: float, allowed_lateness_s: float | None) -> tuple[datetime,
                                                                                                datetime | None]:
    """The latest and earliest accepted event times at ingest time ``now``."""
    return (now + timedelta(seconds=max_future_skew_s),
            None if allowed_lateness_s is None else now - timedelta(seconds=allowed_lateness_s))
