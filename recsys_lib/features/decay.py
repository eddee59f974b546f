"""Decayed sums per key in one or two hash aggregations, and the helpers the folds share.

``decayed_sums`` computes, per key, ``sum weight * 2^-((as_of - ts) / H)`` with
``as_of`` the key's latest event time, carrying plain aggregates (:class:`TwoPhase`)
along so the events are scanned and shuffled once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from pyspark import SparkContext
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from recsys_lib.features.definitions import seconds

T_ = TypeVar("T_")
_MEMO: dict[tuple[Any, ...], Any] = {}


def memo(key: tuple[Any, ...], build: Callable[[], T_]) -> T_:
    """Column expressions built once per Spark application and ``key`` (which must fix them).

    Building a wide fold or merge costs thousands of Py4J calls; a micro-batch
    reuses the (unresolved, data-independent) expressions of the previous one.
    """
    context = SparkContext._active_spark_context
    full = (context.applicationId if context else None, *key)
    if full not in _MEMO:
        _MEMO[full] = build()
    return cast(T_, _MEMO[full])


@dataclass(frozen=True)
class TwoPhase:
    """An aggregate computed in two steps: ``first`` over events, then ``then`` over the partial results.

    ``empty`` (if not None) replaces a null result: the value when no event matched.
    """

    name: str
    first: Column
    then: Callable[[Column], Column]
    empty: Any = None

    def partial(self) -> Column:
        """The first step, aliased to ``name``."""
        return self.first.alias(self.name)

    def final(self) -> Column:
        """The second step over the partial column, aliased to ``name``."""
        return self._filled(self.then(F.col(self.name))).alias(self.name)

    def once(self) -> Column:
        """The whole aggregate in one step (``first`` over all the events), aliased to ``name``."""
        return self._filled(self.first).alias(self.name)

    def _filled(self, column: Column) -> Column:
        return column if self.empty is None else F.coalesce(column, F.lit(self.empty))


def event_bounds(events: DataFrame) -> tuple[datetime | None, tuple[float, float] | None]:
    """The latest ``event_ts`` of ``events``, and its ``span`` for :func:`fold` (None, None when empty).

    ``span`` is the earliest and latest ``event_ts`` in epoch seconds, computed exactly as
    the fold computes each event's time.
    """
    ts = seconds(F.col("event_ts"))
    row = events.agg(F.max("event_ts"), F.min(ts), F.max(ts)).first()
    if row is None or row[0] is None:
        return None, None
    return row[0], (float(row[1]), float(row[2]))


#: The single-pass decayed sums need every event within this many smallest half-lives of the latest.
SINGLE_PASS_HALF_LIVES = 1000.0


def decayed_sums(ev: DataFrame, keys: list[str], terms: dict[str, tuple[Column, float]],
                 min_half_life: float, carried: Sequence[TwoPhase] = (),
                 memo_key: tuple[Any, ...] | None = None, span: tuple[float, float] | None = None) -> DataFrame:
    """Per key, ``sum weight * 2^-((as_of - ts) / H)`` for each term, ``as_of`` being the key's max ``_ts``.

    The result also carries that ``as_of`` (epoch seconds) as ``_as_of_s``, and
    one column per ``carried`` aggregate. With ``memo_key`` (a key that fixes
    ``terms`` and ``carried``) the expressions are built once and reused.

    When ``span`` (earliest, latest ``_ts`` of ``ev``) is at most
    :data:`SINGLE_PASS_HALF_LIVES` x ``min_half_life`` wide, one hash aggregation per key
    sums ``weight * 2^((ts - latest) / H)``: every term lies in [2^-1000, 1], a normal
    double, so nothing underflows, and multiplying by ``2^((latest - as_of) / H)`` (at
    most 2^1000) moves the sum to ``as_of``. Otherwise two hash aggregations: first per
    (key, time block of 256 x the smallest half-life), summing
    ``weight * 2^((ts - block_start) / H)`` (at most 2^256: no overflow); then per key,
    moving each block's sum to ``as_of``. Both equal the direct sum up to rounding. The
    carried aggregates ride along, so the events are scanned and shuffled once.
    """
    if span is not None and single_pass(span, min_half_life):
        return _decayed_sums_single_pass(ev, keys, terms, span[1], carried)
    block = 256.0 * min_half_life

    def columns() -> tuple[list[Column], list[Column]]:
        start = F.col("_b") * block
        first = [F.max("_ts").alias("_m"), *[c.partial() for c in carried],
                 *[F.sum(weight * F.pow(F.lit(2.0), (F.col("_ts") - start) / h)).alias(name)
                   for name, (weight, h) in terms.items()]]
        second = [F.max("_a").alias("_as_of_s"), *[c.final() for c in carried], *[
            F.coalesce(F.sum(F.col(name) * F.pow(F.lit(2.0), (F.col("_b") * block - F.col("_a")) / h)), F.lit(0.0))
            .alias(name) for name, (_, h) in terms.items()]]
        return first, second

    first, second = memo(("decayed", *memo_key, tuple(keys), block), columns) if memo_key else columns()
    blocked = ev.withColumn("_b", F.floor(F.col("_ts") / block))
    partial = blocked.groupBy(*keys, "_b").agg(*first)
    moved = partial.withColumn("_a", F.max("_m").over(Window.partitionBy(*keys)))
    return moved.groupBy(*keys).agg(*second)


def single_pass(span: tuple[float, float] | None, min_half_life: float) -> bool:
    """Whether every event of ``span`` lies within :data:`SINGLE_PASS_HALF_LIVES` smallest half-lives of the latest."""
    return span is not None and span[1] - span[0] <= SINGLE_PASS_HALF_LIVES * min_half_life


def _decayed_sums_single_pass(ev: DataFrame, keys: list[str], terms: dict[str, tuple[Column, float]],
                              latest: float, carried: Sequence[TwoPhase]) -> DataFrame:
    """:func:`decayed_sums` in one aggregation, every term taken relative to ``latest`` (>= every ``_ts``)."""
    sums = [F.sum(weight * F.pow(F.lit(2.0), (F.col("_ts") - F.lit(latest)) / h)).alias(name)
            for name, (weight, h) in terms.items()]
    state = ev.groupBy(*keys).agg(F.max("_ts").alias("_as_of_s"), *[c.once() for c in carried], *sums)
    return state.withColumns({
        name: F.coalesce(F.col(name) * F.pow(F.lit(2.0), (F.lit(latest) - F.col("_as_of_s")) / h), F.lit(0.0))
        for name, (_, h) in terms.items()})


