"""The one schema module: raw records, the ``events`` table and its quarantine.

Identifiers are strings everywhere: a JSON number given as an id is kept as its
decimal text, so ``7`` and ``"7"`` are the same user.
"""

from __future__ import annotations

from enum import Enum

from pyspark.sql import types as T

EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase", "search")

EVENTS_TABLE = "events"
QUARANTINE_TABLE = "events_quarantine"

#: Name of the corrupt-record column while parsing (never stored).
CORRUPT_COLUMN = "_corrupt_record"

#: Fields every raw record must carry.
REQUIRED_FIELDS: tuple[str, ...] = ("event_id", "event_ts", "user_id", "event_type")

#: Typed fields: a present value that cannot be read as this type is ``ill_typed``.
NUMERIC_FIELDS: tuple[str, ...] = ("price", "quantity")

#: Id-like fields: a JSON object or array here is ``ill_typed``.
ID_FIELDS: tuple[str, ...] = ("event_id", "user_id", "item_id", "category_id", "session_id")

#: Optional text fields: blank values are stored as null.
OPTIONAL_TEXT_FIELDS: tuple[str, ...] = ("item_id", "category_id", "session_id", "query")

#: What the JSON parser is asked for. ``event_ts`` stays text: it may be ISO-8601
#: or epoch milliseconds.
RAW_RECORD_SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.StringType()),
        T.StructField("event_ts", T.StringType()),
        T.StructField("user_id", T.StringType()),
        T.StructField("event_type", T.StringType()),
        T.StructField("item_id", T.StringType()),
        T.StructField("category_id", T.StringType()),
        T.StructField("price", T.DoubleType()),
        T.StructField("quantity", T.LongType()),
        T.StructField("session_id", T.StringType()),
        T.StructField("query", T.StringType()),
        T.StructField(CORRUPT_COLUMN, T.StringType()),
    ]
)

#: Where and when a stored row was ingested (in both ``events`` and its quarantine).
INGEST_METADATA: tuple[T.StructField, ...] = (
    T.StructField("source_file", T.StringType(), False),
    T.StructField("ingest_run_id", T.StringType(), False),
    T.StructField("ingested_at", T.TimestampType(), False),
)

EVENTS_SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.StringType(), False),
        T.StructField("event_ts", T.TimestampType(), False),
        T.StructField("user_id", T.StringType(), False),
        T.StructField("event_type", T.StringType(), False),
        T.StructField("item_id", T.StringType()),
        T.StructField("category_id", T.StringType()),
        T.StructField("price", T.DoubleType()),
        T.StructField("quantity", T.LongType()),
        T.StructField("session_id", T.StringType()),
        T.StructField("query", T.StringType()),
        *INGEST_METADATA,
        T.StructField("event_date", T.DateType(), False),
    ]
)
EVENTS_PARTITION_BY: tuple[str, ...] = ("event_date",)

QUARANTINE_SCHEMA = T.StructType(
    [
        T.StructField("record_key", T.StringType(), False),
        T.StructField("raw", T.StringType()),
        T.StructField("raw_bytes", T.LongType(), False),
        T.StructField("reason", T.StringType(), False),
        T.StructField("reason_field", T.StringType()),
        *INGEST_METADATA,
        T.StructField("ingest_date", T.DateType(), False),
    ]
)
QUARANTINE_PARTITION_BY: tuple[str, ...] = ("ingest_date",)


class Reason(str, Enum):
    """Machine-readable quarantine reasons (the ``reason`` column)."""

    OVERSIZED_LINE = "oversized_line"
    UNPARSEABLE = "unparseable"
    NOT_AN_OBJECT = "not_an_object"
    ILL_TYPED = "ill_typed"
    MISSING_FIELD = "missing_field"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    NEGATIVE_PRICE = "negative_price"
    BAD_QUANTITY = "bad_quantity"
    TOO_LATE = "too_late"
