"""The rules of :mod:`recsys_lib.ingest.validate`, applied on the driver to a small batch of lines.

A micro-batch is validated on the driver instead of in a Spark job, in two lanes:
the canonical lines in bulk (:mod:`recsys_lib.ingest.canonical`, Arrow), then
every other line here, one by one, in plain Python. The result must equal Spark's
:func:`~recsys_lib.ingest.validate.classify` line for line, and Spark's JSON
reader has corners Python's does not share (single quotes, ``NaN`` tokens,
partial parses of corrupt records, how a float given for an id is printed,
lenient timestamp casts). So this module decides only the lines whose outcome
it is sure of:

* well-formed JSON objects whose fields have the expected JSON types (ids as
  strings, integers or booleans; ``price`` a number; ``quantity`` an integer),
  with timestamps as epoch milliseconds or canonical ISO-8601
  (``2024-01-01T10:00:00[.ffffff](Z|+hh:mm)``): every rule is then exact;
* oversized lines, and JSON that is valid but not an object.

Every other line is handed to the ``fallback``, which runs Spark's ``classify`` on
just those lines (in the generator's data, bad records included, there are none).
``tests/spark/test_local_ingest.py`` checks all three against Spark on generated and
hand-written lines.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa

from recsys_lib.core.schema import EVENT_TYPES, ID_FIELDS, OPTIONAL_TEXT_FIELDS, REQUIRED_FIELDS, Reason
from recsys_lib.ingest.canonical import classify_canonical, window

#: Columns of a classified line, as :func:`recsys_lib.ingest.validate.classify` returns them.
CLASSIFIED_SCHEMA = pa.schema([
    ("value", pa.string()), ("source_file", pa.string()), ("raw_bytes", pa.int64()), ("reason", pa.string()),
    ("reason_field", pa.string()), ("event_id", pa.string()), ("event_ts", pa.timestamp("us", tz="UTC")),
    ("user_id", pa.string()), ("event_type", pa.string()), ("item_id", pa.string()), ("category_id", pa.string()),
    ("price", pa.float64()), ("quantity", pa.int64()), ("session_id", pa.string()), ("query", pa.string()),
])
_TEXT_FIELDS = (*ID_FIELDS, "event_type", "query")
_STRING_FIELDS = ("event_id", "event_ts", "user_id", "event_type", "item_id", "category_id", "session_id", "query")
_KNOWN = frozenset((*_STRING_FIELDS, "price", "quantity"))
_QUOTED = tuple(f'"{name}"' for name in _KNOWN)
#: First characters after which a text field may start with "{" or "[" once spaces are trimmed.
_OPENING = frozenset("{[ ")
_EPOCH_MS = re.compile(r"-?[0-9]{1,15}")
_CANONICAL_ISO = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?(Z|[+-][0-9]{2}:[0-9]{2})")
#: Text Spark's timestamp rules might read differently: left to Spark.
_ISO_LIKE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ]")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LONG_MIN, _LONG_MAX = -(2 ** 63), 2 ** 63 - 1
_BAD = object()


class _Malformed(Exception):
    """Raised for a line that is not JSON for Spark either: ``unparseable``."""


class _Unsure(Exception):
    """Raised when a line's outcome is Spark's to decide."""


Row = dict[str, Any]


def classify_local(raw: pa.Table, *, max_line_bytes: int, max_future_skew_s: float, now: datetime,
                   allowed_lateness_s: float | None,
                   fallback: Callable[[pa.Table], pa.Table]) -> tuple[pa.Table, int]:
    """Classify lines (columns ``value``, ``source_file``) as Spark's ``classify`` does.

    Canonical lines go through :func:`~recsys_lib.ingest.canonical.classify_canonical`,
    the rest through the per-line rules, and the lines those are unsure of through ``fallback``.

    Returns:
        The classified lines (:data:`CLASSIFIED_SCHEMA`) and how many of them ``fallback``
        (Spark) classified.

    """
    limits = window(now, max_future_skew_s, allowed_lateness_s)
    fast, rest = classify_canonical(raw, max_line_bytes=max_line_bytes, latest=limits[0], earliest=limits[1])
    rows: list[Row] = []
    unsure_values, unsure_files = [], []
    for value, source in zip(rest.column("value").to_pylist(), rest.column("source_file").to_pylist(), strict=True):
        try:
            row = _classify_line(value, max_line_bytes, limits)
        except _Unsure:
            unsure_values.append(value)
            unsure_files.append(source)
            continue
        row["value"], row["source_file"] = value, source
        rows.append(row)
    table = pa.concat_tables([fast.cast(CLASSIFIED_SCHEMA), pa.Table.from_pylist(rows, CLASSIFIED_SCHEMA)])
    if unsure_values:
        spark_rows = fallback(pa.table({"value": pa.array(unsure_values, pa.string()),
                                        "source_file": pa.array(unsure_files, pa.string())}))
        table = pa.concat_tables([table, spark_rows.select(CLASSIFIED_SCHEMA.names).cast(CLASSIFIED_SCHEMA)])
    return table, len(unsure_values)


def _classify_line(value: str, max_line_bytes: int, limits: tuple[datetime, datetime | None]) -> Row:
    raw_bytes = len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if raw_bytes > max_line_bytes:
        return _bad(raw_bytes, Reason.OVERSIZED_LINE, None)
    looks_like_object = value.lstrip(" ").startswith("{")
    try:
        parsed = _parse(value)
    except _Malformed:
        return _bad(raw_bytes, Reason.UNPARSEABLE, None)
    if not isinstance(parsed, dict):
        if looks_like_object:
            raise _Unsure
        return _bad(raw_bytes, Reason.NOT_AN_OBJECT, None)
    if not looks_like_object:
        raise _Unsure  # e.g. a tab before "{": Spark's trim keeps it
    price = parsed.get("price")
    if price is not None and (price.__class__ is bool or not isinstance(price, (int, float))):
        # Spark's reader fails on the field: a corrupt record whose price is present, so the
        # first rule is ill_typed price. Unless quantity fails too (which one Spark's partial
        # parse reports depends on the field order).
        if _quantity(parsed.get("quantity"), strict=False) is _BAD:
            raise _Unsure
        return _bad(raw_bytes, Reason.ILL_TYPED, "price")
    row: Row = {"raw_bytes": raw_bytes, **{name: _text(parsed.get(name)) for name in _STRING_FIELDS}}
    row["price"], row["quantity"] = _price(parsed.get("price")), _quantity(parsed.get("quantity"))
    reason = _first_failing_rule(row, limits)
    if reason is not None:  # a quarantined line keeps only its text: its typed fields are never stored
        return _bad(raw_bytes, *reason)
    for name in OPTIONAL_TEXT_FIELDS:
        text = row[name]
        if text is not None and (not text or (text[0] == " " and _blank(text))):
            row[name] = None
    return row


def _first_failing_rule(row: Row, limits: tuple[datetime, datetime | None]) -> tuple[Reason, str | None] | None:
    """The rules of ``validate._rules`` after parsing, in their order."""
    price, quantity = row["price"], row["quantity"]
    if price is not None and (math.isnan(price) or math.isinf(price)):
        return Reason.ILL_TYPED, "price"
    for name in _TEXT_FIELDS:
        text = row[name]
        if text and text[0] in _OPENING and text.lstrip(" ")[:1] in ("{", "["):
            return Reason.ILL_TYPED, name
    for name in REQUIRED_FIELDS:
        text = row[name]
        if not text or (text[0] == " " and _blank(text)):
            return Reason.MISSING_FIELD, name
    if row["event_type"] not in EVENT_TYPES:
        return Reason.UNKNOWN_EVENT_TYPE, "event_type"
    if row["event_type"] != "search" and _blank(row["item_id"]):
        return Reason.MISSING_FIELD, "item_id"
    ts = _timestamp(row["event_ts"])
    row["event_ts"] = ts
    latest, earliest = limits
    if ts is None:
        return Reason.BAD_TIMESTAMP, "event_ts"
    if ts > latest:
        return Reason.FUTURE_TIMESTAMP, "event_ts"
    if earliest is not None and ts < earliest:
        return Reason.TOO_LATE, "event_ts"
    if price is not None and price < 0:
        return Reason.NEGATIVE_PRICE, "price"
    if quantity is not None and quantity < 1:
        return Reason.BAD_QUANTITY, "quantity"
    return None


def _bad(raw_bytes: int, reason: Reason, field: str | None) -> Row:
    return {"raw_bytes": raw_bytes, "reason": reason.value, "reason_field": field}


def _parse(value: str) -> Any:
    r"""The JSON value of a line; :class:`_Unsure` if Spark's reader might see it differently.

    The fast path is a plain ``json.loads``. A line with ``\u`` escapes (which can hide
    a repeated key or a lone surrogate), or in which a field name occurs twice, is parsed
    again, checking that no key repeats.
    """
    try:
        parsed = _DECODER.decode(value)
    except ValueError as exc:
        if _may_parse_in_spark(value):
            raise _Unsure from exc
        raise _Malformed from exc
    except RecursionError as exc:
        raise _Unsure from exc
    try:
        repeated = isinstance(parsed, dict) and sum(map(value.count, _QUOTED)) > len(_KNOWN & parsed.keys())
        if repeated or "\\u" in value:
            parsed = _STRICT_DECODER.decode(value)
            _check_strings(parsed)
    except ValueError as exc:
        raise _Unsure from exc
    return parsed


def _may_parse_in_spark(value: str) -> bool:
    """True if Spark's reader might accept a line Python's rejects.

    It allows single quotes and NaN / INF / Infinity tokens; and a valid value
    followed by more text is left to it too.
    """
    if "'" in value or "NaN" in value or "INF" in value or "Infinity" in value:
        return True
    try:
        _DECODER.raw_decode(value, len(value) - len(value.lstrip()))
    except (ValueError, RecursionError):
        return False
    return True


def _check_strings(parsed: Any) -> None:
    r"""Raise :class:`_Unsure` if a top-level string value holds a lone surrogate (``\ud800``)."""
    for item in parsed.values() if isinstance(parsed, dict) else ():
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise _Unsure from exc


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Unsure  # which copy Spark keeps is its reader's business
    return out


def _unsure_constant(_name: str) -> float:
    raise _Unsure  # NaN / Infinity tokens


def _text(value: Any) -> str | None:
    """A JSON value as Spark reads it into a string field (objects and arrays: their JSON text)."""
    if value is None or value.__class__ is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        return "{" + ("..." if value else "}")  # only the first character matters (ill_typed)
    if isinstance(value, list):
        return "[" + ("..." if value else "]")
    raise _Unsure  # a float: Spark prints it its own way


def _price(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Unsure  # Spark's reader fails on it: a corrupt record, decided by Spark
    try:
        return float(value)
    except OverflowError as exc:
        raise _Unsure from exc


def _quantity(value: Any, strict: bool = True) -> Any:
    """``quantity`` as Spark reads it; if not a JSON integer that fits a long, :class:`_Unsure` (or ``_BAD``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not _LONG_MIN <= value <= _LONG_MAX:
        if strict:
            raise _Unsure
        return _BAD
    return value


def _blank(value: str | None) -> bool:
    return value is None or not value.strip(" ")


def _timestamp(text: str | None) -> datetime | None:
    """``event_ts`` as Spark's ``parse_event_ts`` reads it; raises :class:`_Unsure` where it might differ."""
    if text is None:
        return None
    trimmed = text.strip(" ")
    if not trimmed.isascii() or not trimmed.isprintable():
        raise _Unsure
    if _EPOCH_MS.fullmatch(trimmed):
        try:
            return _EPOCH + timedelta(milliseconds=int(trimmed))
        except OverflowError as exc:  # beyond Python's years 1..9999
            raise _Unsure from exc
    match = _CANONICAL_ISO.fullmatch(trimmed)
    if match is None:
        if _ISO_LIKE.match(trimmed):
            raise _Unsure  # other ISO forms: Spark's cast decides
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    offset = timedelta(0)
    if zone != "Z":
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 18 or minutes > 59:
            raise _Unsure
        offset = timedelta(hours=hours, minutes=minutes) * (-1 if zone[0] == "-" else 1)
    try:
        local = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                         int((fraction or "0").ljust(6, "0")), tzinfo=timezone(offset))
    except ValueError as exc:
        if int(year) == 0:
            raise _Unsure from exc  # year 0 exists for Spark, not for Python
        return None  # month 13, 30 February, hour 24, second 60: Spark's cast gives null too
    return local.astimezone(UTC)


def event_date(ts: datetime) -> date:
    """The ``event_date`` partition of an event (UTC)."""
    return ts.astimezone(UTC).date()


_DECODER = json.JSONDecoder(parse_constant=_unsure_constant)
_STRICT_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_unsure_constant)
