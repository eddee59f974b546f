"""The feature tables projected into the online store (:mod:`recsys_lib.online`).

The store holds each key's base and pending rows exactly as the Delta table
holds them, encoded, each tagged with the table version it was read at. This
module is the only code that writes feature rows into it:

* :class:`Projector` is called by the stream right after each feature-table
  commit: it writes the pending rows of the keys the micro-batch touched (the
  common case), or catches the table up from Delta when the store is not exactly
  one commit behind (after a SIGKILL, a compaction, a Spark-folded batch);
* :func:`catch_up` reads Delta's change data feed since the store's applied
  version, and rewrites the changed keys' layers from the table at its latest version;
* :func:`load_generation` bulk-loads every table into a new generation and
  switches readers to it (after a full refresh, or when the change feed cannot
  be used: the table was overwritten, or its files were vacuumed);
* :func:`sync_purchases` keeps each user's purchased items (from ``events``);
* :func:`verify` compares every stored row with the Delta table.

A reader's view of a key (:func:`merged_state`) is the merge of its two layers
by the same :class:`~recsys_lib.features.definitions.Merge` rules as Spark's reader.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from recsys_lib.core.config import RecsysConfig
from recsys_lib.core.faults import fault_point
from recsys_lib.core.progress import Progress
from recsys_lib.core.schema import EVENTS_TABLE
from recsys_lib.features.definitions import BUCKET, Entity, entities
from recsys_lib.features.generations import pinned_versions
from recsys_lib.features.layers import PENDING
from recsys_lib.features.local import merge_states
from recsys_lib.lake import Lake, LakeError, TableNotFound
from recsys_lib.lake.files import spark_to_arrow
from recsys_lib.online import Layer, OnlineStore, OnlineStoreError, StoredRow
from recsys_lib.online.base import Write
from recsys_lib.online.codec import SchemaMismatch, decoder, encode_table

log = logging.getLogger(__name__)
_DELIMITER = "\x1f"


def value_columns(entity: Entity) -> list[str]:
    """The columns a stored value holds: every state column and ``updated_at`` (not the keys, not the bucket)."""
    return [c.name for c in entity.columns] + ["updated_at"]


def value_schema(entity: Entity) -> pa.Schema:
    """The Arrow schema of a stored value's columns."""
    schema = spark_to_arrow(entity.schema)
    return pa.schema([schema.field(c) for c in value_columns(entity)])


def key_array(table: pa.Table, entity: Entity) -> pa.ChunkedArray:
    """Each row's store key as Arrow strings: the key value, or the key values joined by U+001F."""
    columns = [table.column(k).cast(pa.string()) for k in entity.keys]  # the change feed gives string_view
    return columns[0] if len(columns) == 1 else pc.binary_join_element_wise(*columns, _DELIMITER)


def store_keys(table: pa.Table, entity: Entity) -> list[str]:
    """Each row's store key (see :func:`key_array`) as Python strings."""
    return [str(k) for k in key_array(table, entity).to_pylist()]


def writes(table: pa.Table, entity: Entity, cfg: RecsysConfig) -> list[Write]:
    """(key, value, expiry) per row of a feature table's rows; the expiry is ``as_of`` + the table's TTL."""
    schema = spark_to_arrow(entity.schema)
    table = table.select(schema.names).cast(schema)
    values = encode_table(table, value_columns(entity))
    ttl = cfg.online.ttl.get(entity.table)  # type: ignore[call-overload]
    if ttl is None:
        expiry: list[float | None] = [None] * table.num_rows
    else:
        micros = table.column("as_of").cast(pa.int64()).to_pylist()
        expiry = [None if m is None else m / 1e6 + ttl for m in micros]
    return list(zip(store_keys(table, entity), values, expiry, strict=True))


def touched_rows(pending: pa.Table, changes: pa.Table, entity: Entity) -> pa.Table:
    """The rows of ``pending`` whose keys are in ``changes`` (what a micro-batch changed)."""
    return pending.filter(pc.is_in(key_array(pending, entity), value_set=key_array(changes, entity).combine_chunks()))


def _raise_watermark(store: OnlineStore, rows: pa.Table) -> None:
    """Move the store's watermark to the newest ``as_of`` among ``rows``."""
    if rows.num_rows:
        newest = pc.max(rows.column("as_of").cast(pa.int64())).as_py()
        if newest is not None:
            store.raise_watermark(int(newest))


def _layers(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    pending = pc.equal(table.column(BUCKET), PENDING)
    return table.filter(pc.invert(pending)), table.filter(pending)


def merged_state(entity: Entity, row: StoredRow,
                 decode: Callable[[bytes], dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """A key's state as readers see it: its base and pending layers merged (None: neither)."""
    decode = decode or decoder(value_schema(entity))
    base = None if row.base is None else decode(row.base)
    pending = None if row.pending is None else decode(row.pending)
    if base is None or pending is None:
        return base if pending is None else pending
    return merge_states(base, pending, entity)


# -- writers ---------------------------------------------------------------------------------------------


@dataclass
class Projector:
    """Keeps the online store in step with the stream's feature commits (thread-safe).

    A store failure never fails the stream: it is logged at WARNING with its cause and
    counted in :attr:`failures`, and the next batch (or ``recsys online sync``) catches
    up from Delta, since the store records what it has applied.
    """

    store: OnlineStore
    lake: Lake
    cfg: RecsysConfig
    failures: int = 0
    catch_ups: int = 0
    last_error: str | None = None
    _entities: dict[str, Entity] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._entities = {e.table: e for e in entities(self.cfg.features).values()}

    def pending_committed(self, table: str, touched: pa.Table | None, read_version: int, version: int) -> None:
        """After a commit of ``table``'s pending layer at ``version``, read at ``read_version``.

        ``touched``: the pending rows of the keys the batch changed (None: not known, catch up instead).
        """
        entity = self._entities[table]
        try:
            gen = self.store.generation()
            if touched is not None and self.store.applied_version(table, gen) == read_version:
                self.store.write(table, Layer.PENDING, writes(touched, entity, self.cfg), version, generation=gen)
                _raise_watermark(self.store, touched)
                self.store.set_applied(table, version, gen)
            else:
                self.catch_ups += 1
                catch_up(self.store, self.lake, self.cfg, entity)
        except (OnlineStoreError, LakeError, OSError, SchemaMismatch, pa.ArrowException) as exc:
            self._failed(f"online store update of {table} at version {version}", exc)

    def table_committed(self, table: str, version: int | None = None) -> None:
        """After any other commit of ``table`` (a compaction): catch up from the change feed.

        ``version``: only if the store has not applied that version yet.
        """
        try:
            if version is not None and self.store.applied_version(table) >= version:
                return
            self.catch_ups += 1
            catch_up(self.store, self.lake, self.cfg, self._entities[table])
        except (OnlineStoreError, LakeError, OSError, SchemaMismatch, pa.ArrowException) as exc:
            self._failed(f"online store catch-up of {table}", exc)

    def events_committed(self) -> None:
        """After new events were committed: add their purchases."""
        try:
            sync_purchases(self.store, self.lake)
        except (OnlineStoreError, LakeError, OSError) as exc:
            self._failed("online store purchases update", exc)

    def _failed(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("%s failed (the next batch or `recsys online sync` catches up): %s", what, self.last_error)


def catch_up(store: OnlineStore, lake: Lake, cfg: RecsysConfig, entity: Entity, *,
             generation: int | None = None, to_version: int | None = None) -> dict[str, Any]:
    """Bring ``entity``'s rows in ``generation`` (default: active) up to ``to_version`` (default: the latest).

    Reads the change data feed since the store's applied version and rewrites the
    changed keys' layers as they are at the latest version (a missing layer is
    deleted). If the store has nothing, or the range holds an overwrite (a full
    refresh), or the feed cannot be read, loads a new generation instead.
    """
    table = entity.table
    if not lake.exists(table):
        return {"table": table, "rows": 0, "skipped": "no table"}
    latest = lake.version(table) if to_version is None else to_version
    gen = store.generation() if generation is None else generation
    applied = store.applied_version(table, gen)
    if applied >= latest:
        return {"table": table, "rows": 0, "version": applied}
    if applied < 0 or _overwritten(lake, table, applied, latest):
        if generation is not None:
            raise OnlineStoreError(f"generation {generation} cannot be caught up: {table} was overwritten")
        return load_generation(store, lake, cfg)
    try:
        changed = lake.changes_arrow(table, applied + 1, latest, columns=[*entity.keys, BUCKET])
    except (LakeError, OSError, ValueError) as exc:  # e.g. files vacuumed since
        log.warning("change feed of %s from version %d unreadable (%s); loading a new generation",
                    table, applied + 1, exc)
        if generation is not None:
            raise
        return load_generation(store, lake, cfg)
    buckets = pc.unique(changed.column(BUCKET)).to_pylist()
    current = lake.read_arrow(table, version=latest, partitions=(BUCKET, buckets)) if buckets else None
    written = 0
    if current is not None:
        # Each layer is rewritten only for the keys whose rows in that layer changed: a commit that
        # touched only the pending bucket says nothing about the base rows (which are not read here).
        for layer, was, now in zip((Layer.BASE, Layer.PENDING), _layers(changed), _layers(current), strict=True):
            touched = pc.unique(key_array(was, entity).combine_chunks())
            rows = now.filter(pc.is_in(key_array(now, entity), value_set=touched))
            absent = touched.filter(pc.invert(pc.is_in(touched, value_set=key_array(rows, entity).combine_chunks())))
            gone: list[Write] = [(k, None, None) for k in absent.to_pylist()]
            written += store.write(table, layer, writes(rows, entity, cfg) + gone, latest, generation=gen)
            _raise_watermark(store, rows)
    fault_point("online_before_applied")  # rows written, the applied version not moved: a re-run rewrites them
    store.set_applied(table, latest, gen)
    keys = len(pc.unique(key_array(changed, entity).combine_chunks()))
    return {"table": table, "rows": written, "keys": keys, "from_version": applied + 1, "version": latest}


def _overwritten(lake: Lake, table: str, after: int, until: int) -> bool:
    """True if a commit in ``after`` < version <= ``until`` replaced the whole table."""
    # history is newest first, and commits after ``until`` may have landed since: reach back to ``after``
    for entry in lake.history(table, limit=lake.version(table) - after):
        version = int(entry.get("version", -1))
        params = entry.get("operationParameters") or {}
        if after < version <= until and str(params.get("mode", "")).lower() == "overwrite":
            return True
    return False


def load_generation(store: OnlineStore, lake: Lake, cfg: RecsysConfig) -> dict[str, Any]:
    """Bulk-load every feature table into a new generation, catch it up, and switch readers to it.

    While a full refresh is unfinished, the tables are loaded at the last complete refresh's
    versions (:func:`~recsys_lib.features.generations.pinned_versions`) and not caught up past them.
    """
    started = time.monotonic()
    gen = store.new_generation()
    report: dict[str, Any] = {"generation": gen, "tables": {}}
    pinned = pinned_versions(lake, [e.table for e in entities(cfg.features).values()]) or {}
    if pinned:
        report["pinned"] = pinned
    for entity, version, rows, t0 in _read_ahead(lake, [e for e in entities(cfg.features).values()
                                                        if lake.exists(e.table)], pinned):
        written = 0
        with Progress(f"online load {entity.table}", rows.num_rows, unit="rows") as progress:
            for layer, part in zip((Layer.BASE, Layer.PENDING), _layers(rows), strict=True):
                for start in range(0, part.num_rows, cfg.online.write_batch):
                    batch = part.slice(start, cfg.online.write_batch)
                    written += store.write(entity.table, layer, writes(batch, entity, cfg), version, generation=gen,
                                           fresh=True)
                    progress.update(batch.num_rows)
        store.set_applied(entity.table, version, gen)
        _raise_watermark(store, rows)
        report["tables"][entity.table] = {"version": version, "rows": written,
                                          "seconds": round(time.monotonic() - t0, 3)}
        fault_point("online_between_tables")  # a half-loaded generation that no reader sees
    for entity in entities(cfg.features).values():  # commits that landed while loading
        catch_up(store, lake, cfg, entity, generation=gen, to_version=pinned.get(entity.table))
    fault_point("online_before_switch")
    store.activate(gen)
    for entity in entities(cfg.features).values():  # and those between the last catch-up and the switch
        catch_up(store, lake, cfg, entity, to_version=pinned.get(entity.table))
    report["purchases"] = sync_purchases(store, lake)
    report["seconds"] = round(time.monotonic() - started, 3)
    return report


def _read_ahead(lake: Lake, wanted: list[Entity],
                pinned: dict[str, int]) -> Iterator[tuple[Entity, int, pa.Table, float]]:
    """(entity, version, rows in key order, start time) per table; the next table is read while this one loads.

    Reading and sorting run in Arrow's C++ code without the GIL, so they overlap the
    Python encoding and the store writes (bulk loads measured ~10% faster).
    """
    def read(entity: Entity) -> tuple[int, pa.Table]:
        version = pinned.get(entity.table, lake.version(entity.table))
        # in key order, so the store's B-tree inserts append (SQLite: 3x faster than table order)
        return version, lake.read_arrow(entity.table, version=version).sort_by([(k, "ascending")
                                                                               for k in entity.keys])

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="online-read") as pool:
        ahead = [pool.submit(read, e) for e in wanted]
        for entity, future in zip(wanted, ahead, strict=True):
            started = time.monotonic()
            version, rows = future.result()
            yield entity, version, rows, started


def sync_purchases(store: OnlineStore, lake: Lake) -> int:
    """Add the purchases of ``events`` versions the store has not seen; returns how many were read."""
    if not lake.exists(EVENTS_TABLE):
        return 0
    latest, applied = lake.version(EVENTS_TABLE), store.purchases_version()
    if applied >= latest:
        return 0
    columns = ["user_id", "item_id", "event_type"]
    events = None
    if applied >= 0:
        events = lake.inserted_arrow(EVENTS_TABLE, applied + 1, latest, max_rows=5_000_000, columns=columns)
    if events is None:  # the first sync, a long gap, or a range that did more than append
        events = lake.read_arrow(EVENTS_TABLE, version=latest, columns=columns)
    bought = events.filter(pc.and_(pc.equal(events.column("event_type"), "purchase"),
                                   pc.is_valid(events.column("item_id"))))
    pairs = list(zip(bought.column("user_id").to_pylist(), bought.column("item_id").to_pylist(), strict=True))
    store.add_purchases(pairs, latest)
    return len(pairs)


def sync(store: OnlineStore, lake: Lake, cfg: RecsysConfig, *, full: bool = False) -> dict[str, Any]:
    """Catch the store up with Delta (``full``: load a new generation from scratch)."""
    if full:
        return load_generation(store, lake, cfg)
    report: dict[str, Any] = {"tables": {}}
    for entity in entities(cfg.features).values():
        result = catch_up(store, lake, cfg, entity)
        if "generation" in result:  # a new generation was loaded: it covers every table
            return result
        report["tables"][entity.table] = result
    report["purchases"] = sync_purchases(store, lake)
    return report


def verify(store: OnlineStore, lake: Lake, cfg: RecsysConfig, *, limit: int = 20) -> tuple[int, list[str]]:
    """Compare every stored row of the active generation with the Delta tables at their latest versions.

    Returns:
        (rows compared, mismatch lines: at most ``limit`` per table, then a count).

    """
    compared, lines = 0, []
    now = time.time()
    pinned = pinned_versions(lake, [e.table for e in entities(cfg.features).values()]) or {}
    for entity in entities(cfg.features).values():
        table = entity.table
        try:
            latest = pinned.get(table, lake.version(table))
        except TableNotFound:
            continue
        applied = store.applied_version(table)
        if applied != latest:
            lines.append(f"{table}: the store is at version {applied}, Delta at {latest} "
                         "(run `recsys online sync`)")
        expected: dict[tuple[str, str], bytes] = {}
        base, pending = _layers(lake.read_arrow(table, version=latest))
        for layer, rows in ((Layer.BASE, base), (Layer.PENDING, pending)):
            for key, value, expire_at in writes(rows, entity, cfg):
                if value is not None and (expire_at is None or expire_at > now):
                    expected[(key, layer.value)] = value
        actual: dict[tuple[str, str], bytes] = {}
        for key, row in store.scan(table):
            for layer, value in ((Layer.BASE, row.base), (Layer.PENDING, row.pending)):
                if value is not None:
                    actual[(key, layer.value)] = value
        bad = []
        for pair in sorted(set(expected) | set(actual)):
            want, got = expected.get(pair), actual.get(pair)
            if want != got:
                what = "missing" if got is None else "not in Delta" if want is None else "differs"
                bad.append(f"{table} key={pair[0]!r} layer={'base' if pair[1] == 'b' else 'pending'}: {what}")
        compared += len(expected)
        lines += bad[:limit] + ([f"{table}: ... {len(bad) - limit} more"] if len(bad) > limit else [])
    return compared, lines
