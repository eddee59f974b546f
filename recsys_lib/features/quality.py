"""The data-quality gate of a full refresh: check each new table version, record the result.

For each refreshed table, on the version just written (base rows):

* every rule of :mod:`recsys_lib.features.expectations` and unique keys, counted in one Spark
  aggregation; a table that breaks any is then validated by pandera's PySpark backend too,
  whose report (the failing checks and values) joins the failures;
* each column's null rate at most ``dq.max_null_rate`` (keys and ``as_of``: none at all), once
  the table holds ``dq.min_rows`` rows, so a refresh whose feature went all null is stopped;
* the row count within ``dq.max_row_change`` (a fraction) of the keys in the version the refresh
  replaces (what readers had, the stream's new keys included), once that held ``dq.min_rows``
  keys, so a refresh that lost half the users is stopped.

The stream checks the rules on the pending rows of every ``dq.stream_every``-th batch
(:func:`check_rows`): it records the outcome and warns; the refresh is the gate.

Each table's outcome is one row of the ``dq_results`` Delta table (also read by
``recsys status``). The refresh publishes (manifest, online store) only when every table
passes; otherwise it raises :class:`DataQualityError` and the CLI exits 3. Readers stay on
the previous complete generation (:mod:`recsys_lib.features.generations`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from deltalake.exceptions import DeltaError
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys_lib.core.config import DqConfig
from recsys_lib.features.definitions import BUCKET, Entity
from recsys_lib.features.expectations import constraints, pandera_schema, rules, violations, with_derived
from recsys_lib.lake import Lake, TableSpec
from recsys_lib.lake.files import spark_to_arrow

log = logging.getLogger(__name__)
DQ_TABLE = "dq_results"
DQ_SCHEMA = T.StructType([
    T.StructField("checked_at", T.TimestampType(), False),
    T.StructField("run_id", T.StringType(), False),
    T.StructField("job", T.StringType(), False),
    T.StructField("table", T.StringType(), False),
    T.StructField("version", T.LongType(), False),
    T.StructField("rows", T.LongType(), False),
    T.StructField("passed", T.BooleanType(), False),
    T.StructField("failures", T.StringType(), False),  # JSON list of messages
])
DQ_SPEC = TableSpec(DQ_TABLE, DQ_SCHEMA, ())


class DataQualityError(RuntimeError):
    """A data-quality gate failed: the refresh was not published."""

    def __init__(self, results: list[TableCheck]) -> None:
        failed = [r for r in results if not r.passed]
        super().__init__("data-quality gate failed, refresh not published: " + "; ".join(
            f"{r.table} v{r.version}: {', '.join(r.failures[:3])}" + (" ..." if len(r.failures) > 3 else "")
            for r in failed))
        self.results = results


@dataclass
class TableCheck:
    """One table version's outcome."""

    table: str
    version: int
    rows: int
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """No rule failed."""
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        """As a JSON-able dict."""
        return asdict(self) | {"passed": self.passed}


def check_table(lake: Lake, entity: Entity, version: int, rows: int, dc: DqConfig, *,
                previous_version: int | None = None, now: datetime | None = None) -> TableCheck:
    """Check ``entity``'s table at ``version`` (``rows`` base rows) against every expectation.

    ``previous_version`` is the version the refresh replaced: the row-count rule compares ``rows``
    with its number of keys (stream updates included), once that is at least ``dq.min_rows``.
    """
    df = lake.read(entity.table, version=version).where(F.col(BUCKET) >= 0)
    out = check_rows(df, entity, version, dc, now=now, explain=True)
    out.rows = rows
    previous = None
    if previous_version is not None and stored_rows(lake, entity, previous_version) >= max(dc.min_rows, 1):
        previous = key_count(lake, entity, previous_version)  # a Spark job, only where the rule can apply
    if previous and previous >= dc.min_rows and abs(rows - previous) > dc.max_row_change * previous:
        out.failures.append(f"rows: {rows:,} is more than {dc.max_row_change:.0%} away from the {previous:,} keys of "
                            f"the version it replaces, v{previous_version} (dq.max_row_change)")
    return out


def check_rows(df: DataFrame, entity: Entity, version: int, dc: DqConfig, *, now: datetime | None = None,
               explain: bool = False) -> TableCheck:
    """The row rules, unique keys and null rates of ``df`` (rows of ``entity``'s table at ``version``).

    ``explain``: when a rule fails, also validate with pandera for its report of the failing checks.
    """
    latest = (now or datetime.now(UTC)) + timedelta(seconds=dc.max_clock_skew)
    counts = violations(df, entity, latest)
    out = TableCheck(entity.table, version, counts["rows"])
    for rule in rules(entity):
        if counts[rule.name]:
            out.failures.append(f"{rule.column}: {counts[rule.name]:,} row(s) break {rule.name} ({rule.describe()})")
    if counts["keys"] < counts["rows"] - sum(counts[f"null:{k}"] for k in entity.keys):
        out.failures.append(f"{', '.join(entity.keys)}: not unique ({counts['rows'] - counts['keys']:,} repeated)")
    required = {r.column for r in rules(entity) if r.kind == "not_null"}
    if counts["rows"] >= max(dc.min_rows, 1):
        for column in (c.name for c in entity.columns if c.name not in required):
            rate = counts[f"null:{column}"] / counts["rows"]
            if rate > dc.max_null_rate:
                out.failures.append(f"{column}: {rate:.1%} null, above dq.max_null_rate {dc.max_null_rate:.1%}")
    if out.failures and explain:
        checked = pandera_schema(entity, latest).validate(with_derived(df, entity))
        for kind, errors in dict(checked.pandera.errors).items():
            for reason, items in errors.items():
                out.failures += [f"pandera: {i.get('column') or 'table'}: {i.get('check')} "
                                 f"({reason.lower()}, {kind.lower()})" for i in items]
    return out


def stored_rows(lake: Lake, entity: Entity, version: int) -> int:
    """Rows of ``entity``'s table at ``version`` from the Delta log's file statistics (no data read).

    An upper bound of its keys (the pending layer repeats some); a file without statistics counts as
    many rows as ``dq.min_rows`` could need, so the exact count is taken.
    """
    from deltalake import DeltaTable

    from recsys_lib.lake.log import logged_rows

    table = DeltaTable(lake.uri(entity.table), version=version,
                       storage_options=getattr(lake, "storage_options", None) or None)
    rows, complete = logged_rows(pa.table(table.get_add_actions(flatten=True)))
    return rows if complete else 2**62


def key_count(lake: Lake, entity: Entity, version: int) -> int:
    """Distinct keys of ``entity``'s table at ``version`` (base and pending rows; key columns only are read)."""
    return int(lake.read(entity.table, version=version).select(*entity.keys).distinct().count())


def record(lake: Lake, results: list[TableCheck], run_id: str, job: str) -> int:
    """Append ``results`` to ``dq_results``; returns its version."""
    at = datetime.now(UTC)
    rows = pa.table({"checked_at": [at] * len(results), "run_id": [run_id] * len(results),
                     "job": [job] * len(results), "table": [r.table for r in results],
                     "version": [r.version for r in results], "rows": [r.rows for r in results],
                     "passed": [r.passed for r in results],
                     "failures": [json.dumps(r.failures) for r in results]}).cast(spark_to_arrow(DQ_SCHEMA))
    return lake.append_arrow(DQ_SPEC, rows).version


def ensure_constraints(lake: Lake, entity: Entity) -> list[str]:
    """Add the Delta CHECK constraints ``entity``'s table lacks; returns the names added.

    They are added in one commit. A table whose rows violate one cannot take them (delta-rs
    checks the existing rows): that is logged at WARNING and left to the data-quality gate,
    which reports the rule the rows break; the next refresh tries again.
    """
    from deltalake import DeltaTable

    table = DeltaTable(lake.uri(entity.table), storage_options=getattr(lake, "storage_options", None) or None)
    have = {k.removeprefix("delta.constraints.") for k in table.metadata().configuration
            if k.startswith("delta.constraints.")}
    missing = {name: sql for name, sql in constraints(entity).items() if name not in have}
    if not missing:
        return []
    try:
        table.alter.add_constraint(missing)  # one commit for all of them
    except DeltaError as exc:
        log.warning("cannot add the constraints %s to %s: %s", sorted(missing), entity.table, exc)
        return []
    return sorted(missing)



def check_stream_batch(lake: Lake, entity: Entity, dc: DqConfig, version: int, batch_id: int | None,
                       ) -> dict[str, Any] | None:
    """Check the pending rows of ``entity``'s table at ``version`` on every ``dq.stream_every``-th batch.

    The outcome goes to ``dq_results`` (job ``stream``); a failure is logged at WARNING and returned,
    not raised: the batch is committed, and the next full refresh is the gate. None on batches not sampled.
    """
    from recsys_lib.features.layers import PENDING
    from recsys_lib.lake import LakeError

    if not dc.enabled or not dc.stream_every or batch_id is None or batch_id % dc.stream_every:
        return None
    pending = lake.read(entity.table, version=version, partitions=(BUCKET, [PENDING]))
    checked = check_rows(pending, entity, version, dc)
    if not checked.passed:
        log.warning("stream batch %s: the pending rows of %s v%d break data-quality rules: %s", batch_id,
                    entity.table, version, "; ".join(checked.failures))
    try:
        record(lake, [checked], f"stream-batch-{batch_id}", "stream")
    except LakeError as exc:  # e.g. a refresh holds dq_results' lease now (LeaseHeld): the log line stays the record
        log.warning("stream batch %s: data-quality result of %s not recorded in %s: %s", batch_id, entity.table,
                    DQ_TABLE, exc)
    return checked.to_json()
