"""Raw JSON lines -> typed records, each valid or carrying one quarantine reason.

Rules, checked in this order (the first that fails is the reason):

=====================  ==============================================================
reason                 when
=====================  ==============================================================
oversized_line         the line is longer than ``ingest.max_line_bytes`` (UTF-8 bytes)
unparseable            not JSON at all (includes blank lines and truncated objects)
not_an_object          valid JSON, but not an object (``[1,2]``, ``"x"``, ``42``)
ill_typed              a field has the wrong JSON type (``reason_field`` names it):
                       ``price`` not a finite number, ``quantity`` not an integer,
                       an id or text field holding an object or array
missing_field          a required field is absent, null or blank; ``item_id`` is
                       required unless ``event_type`` is ``search``
unknown_event_type     ``event_type`` is not one of view, click, add_to_cart, purchase, search
bad_timestamp          ``event_ts`` is neither ISO-8601 with a zone nor epoch milliseconds
future_timestamp       ``event_ts`` is later than ingest time + ``ingest.max_future_skew``
negative_price         ``price`` < 0
bad_quantity           ``quantity`` < 1
=====================  ==============================================================

Ids given as JSON numbers are kept as their decimal text. Blank optional text
fields become null.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys_lib.core.schema import (
    CORRUPT_COLUMN,
    EVENT_TYPES,
    ID_FIELDS,
    NUMERIC_FIELDS,
    RAW_RECORD_SCHEMA,
    REQUIRED_FIELDS,
    Reason,
)

#: File names ingestion reads below the landing folder (hidden and _temp files are skipped by Spark).
RAW_FILE_GLOB = "*.{json,jsonl,ndjson,json.gz,jsonl.gz,ndjson.gz}"

_EPOCH_MS = r"^-?[0-9]{1,15}$"
_ISO_ZONED = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]{1,9})?)?"
    r"(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$"
)
_TEXT_FIELDS = (*ID_FIELDS, "event_type", "query")


def read_raw(spark: SparkSession, input_dir: str) -> DataFrame:
    """Every line of every raw file below ``input_dir``: columns ``value``, ``source_file``.

    Gzipped files (``.gz``) are decompressed transparently.
    """
    return (
        spark.read.option("recursiveFileLookup", "true")
        .option("pathGlobFilter", RAW_FILE_GLOB)
        .text(input_dir)
        .select("value", F.col("_metadata.file_path").alias("source_file"))
    )


def parse_event_ts(text: Column) -> Column:
    """ISO-8601 with a zone, or epoch milliseconds, as a UTC timestamp (null if neither)."""
    trimmed = F.trim(text)
    iso = F.regexp_replace(trimmed, ",", ".")
    return (
        F.when(trimmed.rlike(_EPOCH_MS), F.timestamp_millis(trimmed.try_cast("long")))
        .when(trimmed.rlike(_ISO_ZONED), iso.try_cast("timestamp"))
    )


def classify(raw: DataFrame, *, max_line_bytes: int, max_future_skew_s: float,
             now: datetime) -> DataFrame:
    """Parse and validate raw lines.

    Args:
        raw: Columns ``value`` (the line) and ``source_file``.
        max_line_bytes: Longer lines are ``oversized_line``.
        max_future_skew_s: How far past ``now`` an ``event_ts`` may lie.
        now: The ingest time (UTC) the future check is made against.

    Returns:
        ``raw``'s columns plus ``raw_bytes``, ``reason`` and ``reason_field`` (both null
        for a valid record) and the typed event fields.

    """
    size = F.octet_length("value")
    parsed = F.from_json("value", RAW_RECORD_SCHEMA,
                         {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_COLUMN})
    df = raw.withColumn("raw_bytes", size.cast("long")).withColumn(
        "_j", F.when(F.col("raw_bytes") <= max_line_bytes, parsed)
    )
    j = {name: F.col(f"_j.{name}") for name in RAW_RECORD_SCHEMA.fieldNames()}
    corrupt = j[CORRUPT_COLUMN].isNotNull()
    looks_like_object = F.ltrim(F.col("value")).startswith("{")

    checks: list[tuple[Column, Reason, Column | None]] = [
        (F.col("raw_bytes") > max_line_bytes, Reason.OVERSIZED_LINE, None),
        (~looks_like_object & F.try_parse_json("value").isNull(), Reason.UNPARSEABLE, None),
        (~looks_like_object, Reason.NOT_AN_OBJECT, None),
    ]
    for name in NUMERIC_FIELDS:
        present_raw = F.get_json_object("value", f"$.{name}").isNotNull()
        checks.append((corrupt & j[name].isNull() & present_raw, Reason.ILL_TYPED, F.lit(name)))
    checks.append((corrupt, Reason.UNPARSEABLE, None))
    checks.append((F.isnan(j["price"]) | (F.abs(j["price"]) == float("inf")), Reason.ILL_TYPED,
                   F.lit("price")))
    for name in _TEXT_FIELDS:
        checks.append((F.substring(F.ltrim(j[name]), 1, 1).isin("{", "["), Reason.ILL_TYPED, F.lit(name)))
    for name in REQUIRED_FIELDS:
        checks.append((_blank(j[name]), Reason.MISSING_FIELD, F.lit(name)))
    checks.append((~j["event_type"].isin(*EVENT_TYPES), Reason.UNKNOWN_EVENT_TYPE, F.lit("event_type")))
    checks.append(((j["event_type"] != "search") & _blank(j["item_id"]), Reason.MISSING_FIELD,
                   F.lit("item_id")))
    ts = parse_event_ts(j["event_ts"])
    limit = F.lit(now).cast("timestamp") + F.make_dt_interval(secs=F.lit(float(max_future_skew_s)))
    checks.append((ts.isNull(), Reason.BAD_TIMESTAMP, F.lit("event_ts")))
    checks.append((ts > limit, Reason.FUTURE_TIMESTAMP, F.lit("event_ts")))
    checks.append((j["price"] < 0, Reason.NEGATIVE_PRICE, F.lit("price")))
    checks.append((j["quantity"] < 1, Reason.BAD_QUANTITY, F.lit("quantity")))

    reason: Column = F.lit(None).cast("string")
    reason_field: Column = F.lit(None).cast("string")
    for condition, code, field in reversed(checks):
        reason = F.when(condition, F.lit(code.value)).otherwise(reason)
        reason_field = F.when(condition, field if field is not None else F.lit(None)).otherwise(reason_field)

    typed = [
        j["event_id"].alias("event_id"),
        ts.alias("event_ts"),
        j["user_id"].alias("user_id"),
        j["event_type"].alias("event_type"),
        *[F.when(~_blank(j[n]), j[n]).alias(n) for n in ("item_id", "category_id")],
        j["price"].alias("price"),
        j["quantity"].alias("quantity"),
        *[F.when(~_blank(j[n]), j[n]).alias(n) for n in ("session_id", "query")],
    ]
    return df.select("value", "source_file", "raw_bytes", reason.alias("reason"),
                     reason_field.alias("reason_field"), *typed)


def _blank(col: Column) -> Column:
    return col.isNull() | (F.trim(col) == "")

