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
too_late               ``event_ts`` is older than ingest time - ``ingest.allowed_lateness`` (off by default)
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
#: Names of raw files (anything else in the landing folder is ignored).
RAW_SUFFIXES: tuple[str, ...] = (".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz", ".ndjson.gz")
RAW_FILE_GLOB = "*.{" + ",".join(s[1:] for s in RAW_SUFFIXES) + "}"

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


def read_raw_files(spark: SparkSession, files: list[str]) -> DataFrame:
    """:func:`read_raw` of exactly ``files`` (an empty frame when there are none)."""
    if not files:
        return spark.createDataFrame([], "value string, source_file string")
    return spark.read.text(files).select("value", F.col("_metadata.file_path").alias("source_file"))


def parse_event_ts(text: Column) -> Column:
    """ISO-8601 with a zone, or epoch milliseconds, as a UTC timestamp (null if neither)."""
    trimmed = F.trim(text)
    iso = F.regexp_replace(trimmed, ",", ".")
    return (
        F.when(trimmed.rlike(_EPOCH_MS), F.timestamp_millis(trimmed.try_cast("long")))
        .when(trimmed.rlike(_ISO_ZONED), iso.try_cast("timestamp"))
    )


def classify(raw: DataFrame, *, max_line_bytes: int, max_future_skew_s: float,
             now: datetime, allowed_lateness_s: float | None = None) -> DataFrame:
    """Parse and validate raw lines.

    Args:
        raw: Columns ``value`` (the line) and ``source_file``.
        max_line_bytes: Longer lines are ``oversized_line``.
        max_future_skew_s: How far past ``now`` an ``event_ts`` may lie.
        now: The ingest time (UTC) the future and lateness checks are made against.
        allowed_lateness_s: Older events are ``too_late``; None accepts any age.

    Returns:
        ``raw``'s columns plus ``raw_bytes``, ``reason`` and ``reason_field`` (both null
        for a valid record) and the typed event fields.

    """
    # Three projections, each computing an expensive value once (JSON parse, then
    # timestamp parse, then the rule index). Spark does not collapse a projection
    # whose costly expressions the next one references several times.
    parsed = F.from_json("value", RAW_RECORD_SCHEMA,
                         {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_COLUMN})
    size = F.octet_length("value").cast("long")
    step1 = raw.select("value", "source_file", size.alias("raw_bytes"),
                       F.when(size <= max_line_bytes, parsed).alias("_j"))
    fields = RAW_RECORD_SCHEMA.fieldNames()
    step2 = step1.select("value", "source_file", "raw_bytes",
                         *[F.col(f"_j.{n}").alias(n) for n in fields],
                         parse_event_ts(F.col("_j.event_ts")).alias("_ts"))
    rules = _rules(max_line_bytes, max_future_skew_s, now, allowed_lateness_s)
    index: Column = F.lit(None).cast("int")
    for position, (condition, _, _) in reversed(list(enumerate(rules, start=1))):
        index = F.when(condition, F.lit(position)).otherwise(index)
    reasons = F.array(*[F.lit(code.value) for _, code, _ in rules])
    reason_fields = F.array(*[F.lit(field).cast("string") for _, _, field in rules])
    step3 = step2.withColumn("_rule", index)
    return step3.select(
        "value", "source_file", "raw_bytes",
        F.when(F.col("_rule").isNotNull(), F.element_at(reasons, F.col("_rule"))).alias("reason"),
        F.when(F.col("_rule").isNotNull(), F.element_at(reason_fields, F.col("_rule"))).alias("reason_field"),
        "event_id", F.col("_ts").alias("event_ts"), "user_id", "event_type",
        *[F.when(~_blank(F.col(n)), F.col(n)).alias(n) for n in ("item_id", "category_id")],
        "price", "quantity",
        *[F.when(~_blank(F.col(n)), F.col(n)).alias(n) for n in ("session_id", "query")],
    )


def _rules(max_line_bytes: int, max_future_skew_s: float, now: datetime,
           allowed_lateness_s: float | None = None) -> list[tuple[Column, Reason, str | None]]:
    """The validation rules in order: (failing condition, reason, field). Columns are step 2's."""
    c = F.col
    corrupt = c(CORRUPT_COLUMN).isNotNull()
    looks_like_object = F.ltrim(c("value")).startswith("{")
    rules: list[tuple[Column, Reason, str | None]] = [
        (c("raw_bytes") > max_line_bytes, Reason.OVERSIZED_LINE, None),
        (~looks_like_object & F.try_parse_json("value").isNull(), Reason.UNPARSEABLE, None),
        (~looks_like_object, Reason.NOT_AN_OBJECT, None),
    ]
    for name in NUMERIC_FIELDS:
        present_raw = F.get_json_object("value", f"$.{name}").isNotNull()
        rules.append((corrupt & c(name).isNull() & present_raw, Reason.ILL_TYPED, name))
    rules.append((corrupt, Reason.UNPARSEABLE, None))
    rules.append((F.isnan(c("price")) | (F.abs(c("price")) == float("inf")), Reason.ILL_TYPED, "price"))
    for name in _TEXT_FIELDS:
        rules.append((F.substring(F.ltrim(c(name)), 1, 1).isin("{", "["), Reason.ILL_TYPED, name))
    for name in REQUIRED_FIELDS:
        rules.append((_blank(c(name)), Reason.MISSING_FIELD, name))
    rules.append((~c("event_type").isin(*EVENT_TYPES), Reason.UNKNOWN_EVENT_TYPE, "event_type"))
    rules.append(((c("event_type") != "search") & _blank(c("item_id")), Reason.MISSING_FIELD, "item_id"))
    limit = F.lit(now).cast("timestamp") + F.make_dt_interval(secs=F.lit(float(max_future_skew_s)))
    rules.append((c("_ts").isNull(), Reason.BAD_TIMESTAMP, "event_ts"))
    rules.append((c("_ts") > limit, Reason.FUTURE_TIMESTAMP, "event_ts"))
    if allowed_lateness_s is not None:
        oldest = F.lit(now).cast("timestamp") - F.make_dt_interval(secs=F.lit(float(allowed_lateness_s)))
        rules.append((c("_ts") < oldest, Reason.TOO_LATE, "event_ts"))
    rules.append((c("price") < 0, Reason.NEGATIVE_PRICE, "price"))
    rules.append((c("quantity") < 1, Reason.BAD_QUANTITY, "quantity"))
    return rules


def _blank(col: Column) -> Column:
    return col.isNull() | (F.trim(col) == "")

