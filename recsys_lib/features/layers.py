"""How feature states are stored: bucketed base rows plus a pending layer, merged on read.

A feature table is partitioned by ``key_bucket``:

* buckets ``0 .. key_buckets - 1`` hold the **base** rows, one per key
  (``pmod(xxhash64(keys), key_buckets)``), written by the full refresh and by compaction;
* bucket ``-1`` (:data:`PENDING`) is the **pending layer**: for each key the stream
  touched since the last compaction, the merged state of only the events folded
  since then.

A key's state is ``merge(base row, pending row)``. The merge is associative and
commutative (see :mod:`recsys_lib.features.fold`), so this equals folding all of
the key's events at once. A micro-batch therefore rewrites only the pending layer:
its cost grows with the keys touched since the last compaction, not with the size
of the table. :func:`compact_pending` folds the pending layer into the base
buckets it touches in one commit; the stream runs it when the layer passes
``streaming.pending_max_rows``, and ``recsys maintenance`` runs it too.

Readers use :func:`read_states` (``load_features`` does), never the raw table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from recsys_lib.core.config import FeaturesConfig
from recsys_lib.features.definitions import BUCKET, Entity
from recsys_lib.features.fold import key_bucket, merge
from recsys_lib.lake import Lake, TableSpec

#: The bucket of the pending layer.
PENDING = -1


def table_spec(entity: Entity) -> TableSpec:
    """The Delta table of a feature entity, partitioned by key bucket."""
    return TableSpec(entity.table, entity.schema, (BUCKET,))


def overlay(base: DataFrame, changes: DataFrame, entity: Entity, fc: FeaturesConfig,
            updated_at: datetime | None = None) -> DataFrame:
    """``base`` with ``changes`` merged in key by key.

    Keys only in ``base`` keep their rows untouched; keys in both are merged; keys
    only in ``changes`` are added. Rows come out with their real ``key_bucket``.
    ``updated_at`` stamps the merged rows (None: the later of the two sides' stamps).
    """
    keys = list(entity.keys)
    changed = changes.select(*keys)
    touched = base.join(changed, keys, "left_semi")
    return base.join(changed, keys, "left_anti").unionByName(
        merge(touched, changes, entity, fc, updated_at=updated_at))


def as_pending(states: DataFrame) -> DataFrame:
    """``states`` moved to the pending bucket."""
    return states.withColumn(BUCKET, F.lit(PENDING).cast("int"))


def read_states(lake: Lake, entity: Entity, fc: FeaturesConfig, *, version: int | None = None) -> DataFrame:
    """One row per key: the base merged with the pending layer, at ``version``.

    By default the latest version, or, while a full refresh is unfinished, the version of
    the last complete one (:func:`~recsys_lib.features.generations.pinned_versions`).
    """
    if version is None:
        version = reading_version(lake, entity, fc)
    pending = lake.read(entity.table, version=version, partitions=(BUCKET, [PENDING]))
    base = lake.read(entity.table, version=version)
    if pending.isEmpty():
        return base
    return overlay(base.where(F.col(BUCKET) != PENDING), pending, entity, fc)


def reading_version(lake: Lake, entity: Entity, fc: FeaturesConfig) -> int:
    """The version batch readers read ``entity`` at: the latest, or the pinned one while a refresh is unfinished."""
    from recsys_lib.features.definitions import entities
    from recsys_lib.features.generations import pinned_versions

    pinned = pinned_versions(lake, [e.table for e in entities(fc).values()]) or {}
    return pinned.get(entity.table, lake.version(entity.table))


def compact_pending(lake: Lake, entity: Entity, fc: FeaturesConfig, *,
                    metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge the pending layer into the base buckets it touches, and empty it, in one commit.

    Raises:
        LakeConflictError: Another writer committed to the table meanwhile (nothing changed;
            the pending layer stays and is compacted next time).

    """
    version = lake.version(entity.table)
    pending = lake.read(entity.table, version=version, partitions=(BUCKET, [PENDING]))
    if pending.isEmpty():
        return {"compacted": False, "version": version}
    pending = pending.withColumn(BUCKET, key_bucket(list(entity.keys), fc)).persist()
    try:
        buckets = sorted(r[0] for r in pending.select(BUCKET).distinct().collect())
        base = lake.read(entity.table, version=version, partitions=(BUCKET, buckets))
        contents = overlay(base, pending, entity, fc).repartition(BUCKET)  # one file per bucket rewritten
        result = lake.replace_partitions(table_spec(entity), contents, BUCKET, [*buckets, PENDING],
                                         read_version=version, metadata={"job": "compact_pending", **(metadata or {})})
    finally:
        pending.unpersist()
    return {"compacted": True, "version": result.version, "rows": result.rows, "buckets": len(buckets)}
