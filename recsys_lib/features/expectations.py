"""Data-quality expectations of the feature tables, declared once next to their definitions.

Each :class:`Rule` is one expectation about a table's rows. Rules with ``sql`` are also
Delta CHECK constraints on the table (:func:`constraints`), so every Delta writer that
enforces constraints (delta-rs's own writes, Spark with Delta) refuses a violating row. The
refresh commits files Spark wrote, which no writer checks, so every rule is also checked on
the data itself: in one Spark aggregation whose conditions are the same SQL (:func:`violations`),
and, for a table that breaks any, through a pandera schema for Spark DataFrames
(:func:`pandera_schema`, one Spark job per check) that names the failing checks and values.
The rules:

* keys are not null, and unique among base rows (the pending layer repeats keys by design);
* lifetime counts are >= 0, decayed sums are >= 0 and <= their count (each event weighs at
  most 1 at the row's ``as_of``), spends are >= 0;
* ``as_of`` is not null and not later than the check time plus ``dq.max_clock_skew``.

Rules about a table as a whole (its row count against the previous refresh) live in
:mod:`recsys_lib.features.quality`, which runs all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pyspark.sql import Column, DataFrame

from recsys_lib.core.schema import EVENT_TYPES
from recsys_lib.features.definitions import Entity

#: Float tolerance of "decayed <= count" (sums of powers of two drift by a few ulps).
DECAY_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Rule:
    """One row-level expectation: a column, a bound, and (when Delta can hold it) its CHECK SQL."""

    name: str
    column: str
    #: ``not_null``, ``ge`` (>= ``value``), ``le_column`` (<= the column ``other`` + tolerance) or ``le_now``
    #: (<= the check time plus ``dq.max_clock_skew``, given when checking).
    kind: str
    value: Any = None
    other: str | None = None

    @property
    def sql(self) -> str | None:
        """The Delta CHECK constraint expression, or None when the rule depends on the check time."""
        if self.kind == "ge":
            return f"{self.column} IS NULL OR {self.column} >= {self.value}"
        if self.kind == "le_column":
            return f"{self.column} IS NULL OR {self.column} <= {self.other} + {DECAY_TOLERANCE}"
        return None

    def holds(self, latest: datetime) -> Column:
        """A Spark condition true on the rows that keep this rule (``latest``: the newest allowed ``as_of``)."""
        from pyspark.sql import functions as F

        if self.kind == "not_null":
            return F.col(self.column).isNotNull()
        if self.kind == "le_now":
            return F.col(self.column).isNull() | (F.col(self.column) <= F.lit(latest))
        return F.expr(str(self.sql))  # the CHECK constraint itself

    def describe(self) -> str:
        """The rule in words, for failure messages."""
        return {"not_null": f"{self.column} IS NOT NULL", "le_now": f"{self.column} <= now + dq.max_clock_skew"
                }.get(self.kind) or str(self.sql)


def rules(entity: Entity) -> list[Rule]:
    """The row-level expectations of ``entity``'s table (see the module docstring)."""
    names = {c.name for c in entity.columns}
    out = [Rule(f"{k}_not_null", k, "not_null") for k in entity.keys]
    out.append(Rule("as_of_not_null", "as_of", "not_null"))
    out.append(Rule("as_of_not_in_future", "as_of", "le_now"))
    for etype in EVENT_TYPES:
        count = f"{etype}_count"
        if count not in names:
            continue
        out.append(Rule(f"{count}_non_negative", count, "ge", 0))
        for c in entity.columns:
            if c.name.startswith(f"{etype}_decayed_"):
                out.append(Rule(f"{c.name}_non_negative", c.name, "ge", 0))
                out.append(Rule(f"{c.name}_at_most_count", c.name, "le_column", other=count))
    for column in ("purchase_spend", "purchase_price_sum", "purchase_priced_count"):
        if column in names:
            out.append(Rule(f"{column}_non_negative", column, "ge", 0))
    return out


def constraints(entity: Entity) -> dict[str, str]:
    """Delta CHECK constraints (name -> SQL) for ``entity``'s table."""
    return {r.name: r.sql for r in rules(entity) if r.sql is not None}


def violations(df: DataFrame, entity: Entity, latest_as_of: datetime) -> dict[str, int]:
    """Counts over ``df`` in one Spark job.

    Returns the rows breaking each rule (by its name), ``rows``, distinct ``keys``, and per
    column its nulls (``null:<column>``, keys included).
    """
    from pyspark.sql import functions as F

    aggs = [F.count(F.lit(1)).alias("rows"), F.count_distinct(*[F.col(k) for k in entity.keys]).alias("keys")]
    aggs += [F.sum(F.when(r.holds(latest_as_of), 0).otherwise(1)).alias(r.name) for r in rules(entity)]
    aggs += [F.sum(F.col(c).isNull().cast("int")).alias(f"null:{c}")
             for c in (*entity.keys, *(c.name for c in entity.columns))]
    row = df.agg(*aggs).first()
    return {k: int(v or 0) for k, v in (row.asDict() if row is not None else {}).items()}


def pandera_schema(entity: Entity, latest_as_of: datetime) -> Any:
    """A ``pandera.pyspark`` schema of every rule, plus unique keys.

    Validate base rows only: the pending layer (``key_bucket = -1``) repeats keys by design.
    Cross-column rules (decayed <= count) are checked through a derived column that
    :func:`with_derived` adds.
    """
    import pandera.pyspark as pa
    from pyspark.sql import types as T

    types: dict[str, Any] = {f.name: f.dataType for f in entity.schema.fields}
    checks: dict[str, list[Any]] = {}
    nullable: dict[str, bool] = {}
    for rule in rules(entity):
        if rule.kind == "not_null":
            nullable[rule.column] = False
        elif rule.kind == "ge":
            checks.setdefault(rule.column, []).append(pa.Check.ge(rule.value))
        elif rule.kind == "le_column":
            checks.setdefault(_excess(rule), []).append(pa.Check.le(DECAY_TOLERANCE))
            types[_excess(rule)] = T.DoubleType()
        elif rule.kind == "le_now":
            checks.setdefault(rule.column, []).append(pa.Check.le(latest_as_of))
    columns = {c: pa.Column(types[c], checks=checks.get(c, []), nullable=nullable.get(c, True))
               for c in sorted(set(checks) | set(nullable))}
    return pa.DataFrameSchema(columns, unique=list(entity.keys), name=entity.table)


def with_derived(df: Any, entity: Entity) -> Any:
    """``df`` with one ``<decayed>__over_<count>`` column (decayed minus count) per cross-column rule."""
    from pyspark.sql import functions as F

    for rule in rules(entity):
        if rule.kind == "le_column":
            df = df.withColumn(_excess(rule), F.col(rule.column) - F.col(str(rule.other)))
    return df


def _excess(rule: Rule) -> str:
    return f"{rule.column}__over_{rule.other}"
