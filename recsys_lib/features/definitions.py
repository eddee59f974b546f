"""Feature definitions, written once: every feature is a mergeable aggregate.

Each entity (user, item, user x category) has state columns. Each column has

* a **fold**: Spark aggregates over a set of events (:mod:`recsys_lib.features.fold`);
* a **merge**: combines two states of the same key. It is associative and
  commutative, and the missing side of an outer join is its identity;
* a **doc** line for the catalogue (``docs/features.md``).

Decayed sums are stored relative to the row's ``as_of`` (its largest
``event_ts``): ``S = sum 2^-((as_of - ts) / H)``. Two states merge to
``a = max(a1, a2)`` and ``S = S1 * 2^-((a - a1) / H) + S2 * 2^-((a - a2) / H)``, so
the state of any event multiset is the same however it is split into batches.
Read-time features (decay to a later time, smoothed rates, recency) live in
:mod:`recsys_lib.features.read`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys_lib.core.config import FeaturesConfig
from recsys_lib.core.schema import EVENT_TYPES

USER, ITEM, USER_CATEGORY = "user", "item", "user_category"

RECENT_ITEM = T.StructType([
    T.StructField("ts", T.TimestampType()), T.StructField("event_id", T.StringType()),
    T.StructField("item_id", T.StringType()),
])
LATEST_STRING = T.StructType([
    T.StructField("ts", T.TimestampType()), T.StructField("event_id", T.StringType()),
    T.StructField("value", T.StringType()),
])
LATEST_DOUBLE = T.StructType([
    T.StructField("ts", T.TimestampType()), T.StructField("event_id", T.StringType()),
    T.StructField("value", T.DoubleType()),
])


class Sides:
    """The two states being merged (``l``, ``r``) plus the merged ``as_of`` in seconds."""

    def __init__(self, left: str = "l", right: str = "r") -> None:
        self.left, self.right = left, right
        self.as_of_s = F.greatest(seconds(self.l("as_of")), seconds(self.r("as_of")))

    def l(self, name: str) -> Column:  # noqa: E743 - short names read like the formulas
        return F.col(f"{self.left}.{name}")

    def r(self, name: str) -> Column:
        return F.col(f"{self.right}.{name}")

    def decayed(self, side: str, name: str, half_life: float) -> Column:
        """One side's decayed sum moved to the merged ``as_of`` (0 when the side is missing)."""
        get = self.l if side == "l" else self.r
        factor = F.pow(F.lit(2.0), -(self.as_of_s - seconds(get("as_of"))) / half_life)
        return F.coalesce(get(name) * factor, F.lit(0.0))


class Merge(str, Enum):
    """How two states of one column combine (the same rule in Spark and in :mod:`.local`)."""

    MAX = "max"  #: the larger value (structs compare field by field); nulls ignored
    SUM = "sum"  #: the sum, a missing side counting 0
    DECAY = "decay"  #: each side's decayed sum moved to the merged ``as_of``, then added
    HLL_UNION = "hll_union"  #: union of the HyperLogLog sketches
    RECENT = "recent"  #: newest entries first, one per item, at most ``param`` of them
    MAP_DECAY = "map_decay"  #: key by key, like DECAY (a key missing on one side counts 0)


@dataclass(frozen=True)
class StateColumn:
    """One stored column: its type, documentation and merge rule.

    ``param`` is the half-life in seconds (DECAY, MAP_DECAY) or the length limit (RECENT).
    """

    name: str
    dtype: T.DataType
    doc: str
    kind: Merge
    param: float = 0.0

    def merge(self, s: Sides) -> Column:
        """The merged value as a Spark column over the two sides ``s``."""
        return _SPARK_MERGES[self.kind](self.name, self.param, s)


#: The feature tables' partition column: ``pmod(xxhash64(keys), key_buckets)``, or the pending layer's bucket.
BUCKET = "key_bucket"


@dataclass(frozen=True)
class Entity:
    """A feature table: its keys, the events it folds and its state columns."""

    name: str
    table: str
    keys: tuple[str, ...]
    doc: str
    columns: tuple[StateColumn, ...] = field(default_factory=tuple)

    @property
    def schema(self) -> T.StructType:
        """Stored schema: keys, state columns, ``updated_at`` and the bucket partition."""
        fields = [T.StructField(k, T.StringType(), False) for k in self.keys]
        fields += [T.StructField(c.name, c.dtype) for c in self.columns]
        fields += [T.StructField("updated_at", T.TimestampType()), T.StructField(BUCKET, T.IntegerType())]
        return T.StructType(fields)


def seconds(ts: Column) -> Column:
    """A timestamp as fractional epoch seconds (exact to the microsecond)."""
    return F.unix_micros(ts) / F.lit(1_000_000.0)


def half_life_label(seconds_: float) -> str:
    """``3600`` -> ``1h``, ``86400`` -> ``1d``, ``604800`` -> ``7d``."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds_ >= size and seconds_ % size == 0:
            return f"{int(seconds_ // size)}{unit}"
    return f"{int(seconds_)}s"


def decayed_name(event_type: str, half_life: float) -> str:
    """Column name of a decayed count, e.g. ``click_decayed_1d``."""
    return f"{event_type}_decayed_{half_life_label(half_life)}"


def decayed_columns(fc: FeaturesConfig) -> dict[str, float]:
    """Every decayed-count column name with its half-life in seconds."""
    return {decayed_name(t, h): h for t in EVENT_TYPES for h in fc.half_lives}


def _spark_sum(name: str, _: float, s: Sides) -> Column:
    return F.coalesce(s.l(name), F.lit(0)) + F.coalesce(s.r(name), F.lit(0))


def _spark_max(name: str, _: float, s: Sides) -> Column:
    return F.greatest(s.l(name), s.r(name))


def _spark_decay(name: str, half_life: float, s: Sides) -> Column:
    return s.decayed("l", name, half_life) + s.decayed("r", name, half_life)


def _spark_hll_union(name: str, _: float, s: Sides) -> Column:
    return (F.when(s.l(name).isNull(), s.r(name)).when(s.r(name).isNull(), s.l(name))
            .otherwise(F.hll_union(s.l(name), s.r(name), allowDifferentLgConfigK=True)))


def _spark_recent(name: str, limit: float, s: Sides) -> Column:
    both = F.sort_array(F.concat(F.coalesce(s.l(name), F.array()), F.coalesce(s.r(name), F.array())), asc=False)
    # keep each item's newest entry: drop an entry if the item appears earlier in the sorted array
    first = F.filter(both, lambda x, i: ~F.exists(F.slice(both, 1, i), lambda y: y["item_id"] == x["item_id"]))
    return F.slice(first, 1, int(limit))


def _spark_map_decay(name: str, half_life: float, s: Sides) -> Column:
    fl = F.pow(F.lit(2.0), -(s.as_of_s - seconds(s.l("as_of"))) / half_life)
    fr = F.pow(F.lit(2.0), -(s.as_of_s - seconds(s.r("as_of"))) / half_life)
    empty = F.create_map().cast(T.MapType(T.StringType(), T.DoubleType()))
    return F.map_zip_with(
        F.coalesce(s.l(name), empty), F.coalesce(s.r(name), empty),
        lambda _k, x, y: F.coalesce(x * fl, F.lit(0.0)) + F.coalesce(y * fr, F.lit(0.0)),
    )


_SPARK_MERGES: dict[Merge, Callable[[str, float, Sides], Column]] = {
    Merge.MAX: _spark_max, Merge.SUM: _spark_sum, Merge.DECAY: _spark_decay, Merge.HLL_UNION: _spark_hll_union,
    Merge.RECENT: _spark_recent, Merge.MAP_DECAY: _spark_map_decay,
}


def _common_columns(fc: FeaturesConfig) -> list[StateColumn]:
    cols = [
        StateColumn("as_of", T.TimestampType(),
                    "Largest event_ts folded into the row; decayed sums are relative to it.", Merge.MAX),
        StateColumn("last_event_ts", T.TimestampType(),
                    "Timestamp of the row's latest event (equal to as_of by definition; kept for readers).",
                    Merge.MAX),
    ]
    for etype in EVENT_TYPES:
        cols.append(StateColumn(f"{etype}_count", T.LongType(), f"Lifetime number of {etype} events.",
                                Merge.SUM))
        for h in fc.half_lives:
            name = decayed_name(etype, h)
            cols.append(StateColumn(
                name, T.DoubleType(),
                f"Sum over {etype} events of 2^-((as_of - ts) / {half_life_label(h)}).", Merge.DECAY, h))
    return cols


def entities(fc: FeaturesConfig) -> dict[str, Entity]:
    """The three feature tables for this config."""
    common = _common_columns(fc)
    user_extra = [
        StateColumn("recent_items", T.ArrayType(RECENT_ITEM),
                    f"Up to {fc.recent_items} most recent distinct items (ts, event_id, item_id), newest first; "
                    "ties by larger event_id.", Merge.RECENT, fc.recent_items),
        StateColumn("category_weights", T.MapType(T.StringType(), T.DoubleType()),
                    f"Category -> sum of type weight x 2^-((as_of - ts) / {half_life_label(fc.affinity_half_life)}) "
                    "over events with a category (all categories; top-K is taken at read time).",
                    Merge.MAP_DECAY, fc.affinity_half_life),
        StateColumn("purchase_spend", T.DoubleType(),
                    "Sum of price x quantity (quantity defaults to 1) over purchases.", Merge.SUM),
        StateColumn("purchase_price_sum", T.DoubleType(), "Sum of price over purchases that carry a price.",
                    Merge.SUM),
        StateColumn("purchase_priced_count", T.LongType(), "Number of purchases that carry a price.",
                    Merge.SUM),
    ]
    item_extra = [
        StateColumn("latest_category", LATEST_STRING,
                    "Category of the latest event (by ts, then event_id) that has one.", Merge.MAX),
        StateColumn("latest_price", LATEST_DOUBLE, "Price of the latest event (by ts, then event_id) that has one.",
                    Merge.MAX),
        StateColumn("users_hll", T.BinaryType(),
                    f"HyperLogLog sketch (lgK={fc.hll_lg_k}) of distinct users; unions exactly.",
                    Merge.HLL_UNION),
    ]
    return {
        USER: Entity(USER, "user_features", ("user_id",), "One row per user.", tuple(common + user_extra)),
        ITEM: Entity(ITEM, "item_features", ("item_id",), "One row per item (events without item_id are skipped).",
                     tuple(common + item_extra)),
        USER_CATEGORY: Entity(USER_CATEGORY, "user_category_features", ("user_id", "category_id"),
                              "One row per (user, category) (events without category_id are skipped).",
                              tuple(common)),
    }
