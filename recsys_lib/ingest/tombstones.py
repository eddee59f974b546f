"""Tombstones: events of a forgotten person that arrive later are dropped at ingest.

``forget_tombstones`` holds one row per forget, and one per lift (``recsys forget --lift``):
the person's audit digest (:func:`recsys_lib.core.privacy.audit_digests` of the id the
tables use), when, and whether it lifts the tombstone. Neither the raw id nor the pseudonym is
stored. Both ingest engines drop a line whose user id's digest is tombstoned, before
validation counts it, and count it as ``forgotten`` (never stored, never quarantined).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column
from pyspark.sql import types as T

from recsys_lib.core.config import RecsysConfig
from recsys_lib.core.privacy import Pseudonyms, audit_digests, pseudonyms_for
from recsys_lib.lake import Lake, TableSpec
from recsys_lib.lake.files import spark_to_arrow

TOMBSTONES_TABLE = "forget_tombstones"
TOMBSTONES_SCHEMA = T.StructType([
    T.StructField("digest", T.StringType(), False),
    T.StructField("at", T.TimestampType(), False),
    T.StructField("lifted", T.BooleanType(), False),
])
TOMBSTONES_SPEC = TableSpec(TOMBSTONES_TABLE, TOMBSTONES_SCHEMA, ())


@dataclass(frozen=True)
class Tombstones:
    """The digests in force, and how to compute a raw user id's digest."""

    digests: frozenset[str]
    pseudonyms: Pseudonyms | None
    audit: Pseudonyms

    def column(self, raw_user_id: Column) -> Column:
        """True where the raw id belongs to a forgotten person (Spark)."""
        stored = raw_user_id if self.pseudonyms is None else self.pseudonyms.column(raw_user_id)
        return raw_user_id.isNotNull() & self.audit.column(stored).isin(*sorted(self.digests))

    def arrow(self, raw_user_ids: pa.ChunkedArray | pa.Array) -> pa.Array:
        """True where the raw id belongs to a forgotten person (Arrow; nulls are False)."""
        stored = raw_user_ids if self.pseudonyms is None else self.pseudonyms.arrow(raw_user_ids)
        found = pc.is_in(self.audit.arrow(stored), value_set=pa.array(sorted(self.digests), pa.string()))
        return pc.fill_null(found, False)


def tombstones(lake: Lake, cfg: RecsysConfig) -> Tombstones | None:
    """The tombstones in force, or None when there are none (the common case costs one existence check)."""
    if not lake.exists(TOMBSTONES_TABLE):
        return None
    rows = lake.read_arrow(TOMBSTONES_TABLE).sort_by("at").to_pylist()
    state: dict[str, bool] = {}
    for row in rows:  # in time order: a later lift wins over the forget, a later forget over the lift
        state[row["digest"]] = bool(row["lifted"])
    live = frozenset(d for d, lifted in state.items() if not lifted)
    if not live:
        return None
    return Tombstones(live, pseudonyms_for(cfg), audit_digests(cfg))


def record(lake: Lake, digests: Sequence[str], now: datetime, *, lifted: bool = False) -> None:
    """Add (or, with ``lifted``, lift) tombstones for ``digests``."""
    rows = pa.table({"digest": list(digests), "at": [now] * len(digests),
                     "lifted": [lifted] * len(digests)}).cast(spark_to_arrow(TOMBSTONES_SCHEMA))
    lake.append_arrow(TOMBSTONES_SPEC, rows)
