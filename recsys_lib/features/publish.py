"""Published feature tables: one row per key, in plain Delta that any reader can open.

The lake's feature tables are the suite's working state (:mod:`recsys_lib.features.layers`):
base buckets plus a pending layer that holds a second row for every key the stream touched
since the last compaction. Our readers merge the two (:func:`~recsys_lib.features.layers.read_states`);
DuckDB, Polars or delta-rs would see both rows. So each feature table is also **published**
under ``<home>/published/<table>`` (``lake.published_root``):

* one row per key, with the documented columns (``docs/features.md``) and ``key_bucket``
  as the partition column. ``as_of`` is the row's event time: its decayed sums are
  relative to it, as in the working table;
* the merged state at one version of the working table, recorded in the commit's
  metadata as ``source_version`` (with ``source_table``);
* written after a full refresh completes (after its quality gate and manifest), after
  every compaction of the pending layer (the stream's, and ``recsys maintain``'s), and by
  ``recsys maintain``, so it is as fresh as the last compaction. The online store is the
  per-event fresh copy.

A publish rewrites only the buckets whose keys changed since the published
``source_version`` (read from the change data feed: a base row's bucket, or the bucket of
a pending row's key); without that history (vacuumed, forgotten) it rewrites the table.
It is idempotent, so a publish that died is redone by the next one.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow.compute as pc
from pyspark.sql import functions as F

from recsys_lib.core.config import FeaturesConfig, RecsysConfig
from recsys_lib.features.definitions import BUCKET, Entity
from recsys_lib.features.fold import key_bucket
from recsys_lib.features.layers import PENDING, overlay, read_states, reading_version, table_spec
from recsys_lib.lake import Lake, LakeError

log = logging.getLogger(__name__)
SOURCE_VERSION = "source_version"


def published_version(published: Lake, entity: Entity) -> int | None:
    """The working table's version the published table reflects (None: never published)."""
    if not published.exists(entity.table):
        return None
    found = published.job_metadata(entity.table, SOURCE_VERSION)
    return None if found is None else int(found)


def publish(lake: Lake, published: Lake, entity: Entity, fc: FeaturesConfig, *,
            version: int | None = None) -> dict[str, Any]:
    """Bring ``entity``'s published table up to its working table at ``version``.

    Args:
        lake: The lake holding the working table.
        published: The lake of the published tables.
        entity: The feature table.
        fc: Feature config (merge rules, bucket count).
        version: The working table's version (default: the latest, or the pinned one
            while a full refresh is unfinished).

    Returns:
        What was done: ``published`` (bool), ``source_version``, ``buckets`` rewritten
        (``"all"`` for a whole rewrite), ``rows`` written and the published ``version``.

    Raises:
        LakeConflictError: Another publish committed meanwhile (the next one catches up).

    """
    if version is None:
        version = reading_version(lake, entity, fc)
    done = published_version(published, entity)
    if done is not None and done >= version:
        return {"published": False, SOURCE_VERSION: done}
    spec = table_spec(entity)
    meta = {"job": "publish", SOURCE_VERSION: version, "source_table": lake.uri(entity.table)}
    buckets = None if done is None else _changed_buckets(lake, entity, fc, done + 1, version)
    if buckets is None:
        published.create(spec)
        result = published.overwrite(spec, read_states(lake, entity, fc, version=version), metadata=meta)
        return {"published": True, SOURCE_VERSION: version, "buckets": "all", "rows": result.rows,
                "version": result.version}
    if not buckets:  # commits without row changes (metadata, file compaction): nothing to rewrite
        return {"published": False, SOURCE_VERSION: version, "version": published.note(entity.table, meta)}
    base = lake.read(entity.table, version=version, partitions=(BUCKET, buckets))
    pending = lake.read(entity.table, version=version, partitions=(BUCKET, [PENDING]))
    pending = pending.withColumn(BUCKET, key_bucket(list(entity.keys), fc)).where(F.col(BUCKET).isin(buckets))
    contents = overlay(base, pending, entity, fc).repartition(BUCKET)
    result = published.replace_partitions(spec, contents, BUCKET, buckets,
                                          read_version=published.version(entity.table), metadata=meta)
    return {"published": True, SOURCE_VERSION: version, "buckets": len(buckets), "rows": result.rows,
            "version": result.version}


def _changed_buckets(lake: Lake, entity: Entity, fc: FeaturesConfig, first: int, last: int) -> list[int] | None:
    """Buckets whose keys changed in versions ``first``..``last``, or None to rewrite everything.

    None when a full refresh is among those commits, when the change feed of the range is
    gone, or when it touches most buckets anyway. Otherwise the range holds stream merges,
    compactions and deletes, whose changes (keys and bucket only) the driver reads.
    """
    newest = lake.version(entity.table)  # the history comes newest first; ``last`` may be older (a pinned read)
    jobs = [json.loads(e["recsys"]).get("job") for e in lake.history(entity.table, limit=newest - first + 1)
            if first <= int(e.get("version", -1)) <= last and e.get("recsys")]
    if "features_refresh" in jobs:
        return None
    keys = list(entity.keys)
    try:
        changes = lake.changes_arrow(entity.table, first, last, columns=[*keys, BUCKET])
    except LakeError as exc:
        log.warning("republishing all of %s: %s", entity.table, exc)
        return None
    buckets = {int(b) for b in pc.unique(changes.column(BUCKET)).to_pylist() if b is not None and b != PENDING}
    pending = changes.filter(pc.equal(changes.column(BUCKET), PENDING)).select(keys)
    if pending.num_rows:  # a pending row's key goes to its real bucket (Spark's hash, as the tables use)
        hashed = lake.spark.createDataFrame(pending).select(key_bucket(keys, fc).alias("b")).distinct().collect()
        buckets |= {int(r[0]) for r in hashed}
    return None if len(buckets) > fc.key_buckets // 2 else sorted(buckets)


def publish_all(lake: Lake, cfg: RecsysConfig, tables: list[Entity] | None = None, *,
                versions: dict[str, int] | None = None) -> dict[str, Any]:
    """:func:`publish` each feature table (default: all), at ``versions`` (table -> version) where given.

    A table that cannot be published now (a concurrent publish, unreadable state) is reported
    and logged at WARNING, not raised: the working tables are the truth, and the next publish
    (a refresh, a compaction, ``recsys maintain``) catches up from the published ``source_version``.
    """
    from recsys_lib.features.definitions import entities
    from recsys_lib.lake import published_lake

    published = published_lake(lake.spark, cfg)

    def one(entity: Entity) -> dict[str, Any]:
        try:
            return publish(lake, published, entity, cfg.features, version=(versions or {}).get(entity.table))
        except LakeError as exc:
            log.warning("published %s not updated (the next refresh, compaction or `recsys maintain` catches "
                        "up): %s", entity.table, exc)
            return {"published": False, "error": f"{type(exc).__name__}: {exc}"}

    todo = tables if tables is not None else list(entities(cfg.features).values())
    with ThreadPoolExecutor(max_workers=max(len(todo), 1)) as pool:  # one table each: independent commits
        return dict(zip((e.table for e in todo), pool.map(one, todo), strict=True))
