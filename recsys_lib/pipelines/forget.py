"""The forget job (``recsys forget``): erase people from the tables, the online store and Delta's history.

For each person (the shop's raw id, turned into the id the tables use):

1. a tombstone, first, so that events arriving from now on are dropped at ingest
   (:mod:`recsys_lib.ingest.tombstones`), by the stream too;
2. under the writer leases, their rows are deleted from ``events``, ``training_examples``
   and ``recommendations`` (and, with pseudonyms off, their quarantined lines: with
   pseudonyms on those hold no id);
3. the online store loses their rows in every generation and their purchases, and its files
   are rewritten (SQLite ``VACUUM``; Redis ``BGSAVE``/``BGREWRITEAOF`` when it persists); this
   comes before the refresh, which removes the keys it finds them by;
4. a full refresh recomputes every feature table from the remaining events: the user and
   user x category rows are gone, and every item row equals a refresh without them;
5. each table's history is purged (:meth:`~recsys_lib.lake.Lake.purge_history`): older
   versions, change-feed files and log entries (which hold deleted rows, file statistics and
   the deletes' predicates) are removed, and so is the history of the published feature tables
   (:mod:`recsys_lib.features.publish`), brought up to date first. This bypasses the retention check,
   and says so;
6. every model bundle under RECSYS_HOME (the MLflow artifact store when it is a local folder,
   and ``<home>/serving``) drops their id from its vocabulary and zeroes their embedding row
   (:mod:`recsys_lib.models.scrub`), the exported query tower included;
7. raw files in ``ingest.landing_dir`` lose their lines (:mod:`recsys_lib.ingest.landing`);
8. an audit row per person goes to ``forget_log``: the audit digest (never the id or the
   pseudonym), the rows deleted per table (and ``landing_lines``, ``model_bundles``), the
   versions, the files removed, and what this job does not reach (:data:`NOT_REACHED`).

Re-running it is safe (each step finds nothing left to do), so a killed run is resumed by
running it again (``tests/faults/test_forget_kill.py``); the resumed run's audit row counts what
that run removed itself.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from pyspark.sql import types as T

from recsys_lib.core.config import RecsysConfig
from recsys_lib.core.faults import fault_point
from recsys_lib.core.privacy import audit_digests, stored_id
from recsys_lib.core.schema import EVENTS_TABLE, QUARANTINE_TABLE
from recsys_lib.features import entities
from recsys_lib.features.definitions import USER_CATEGORY
from recsys_lib.features.publish import SOURCE_VERSION, publish
from recsys_lib.ingest import tombstones
from recsys_lib.ingest.corrupt import INGEST_TABLES
from recsys_lib.ingest.landing import scrub_landing
from recsys_lib.lake import Lake, LakeError, TableSpec, published_lake
from recsys_lib.lake.files import spark_to_arrow
from recsys_lib.models.scrub import bundle_folders
from recsys_lib.online import OnlineStore, key_of, open_store
from recsys_lib.pipelines.features import run_refresh
from recsys_lib.pipelines.serve import RECOMMENDATIONS_TABLE
from recsys_lib.pipelines.training import TRAINING_TABLE

log = logging.getLogger(__name__)

FORGET_LOG_TABLE = "forget_log"
FORGET_LOG_SPEC = TableSpec(FORGET_LOG_TABLE, T.StructType([
    T.StructField("run_id", T.StringType(), False),
    T.StructField("digest", T.StringType(), False),
    T.StructField("started_at", T.TimestampType(), False),
    T.StructField("finished_at", T.TimestampType(), False),
    T.StructField("rows_deleted", T.StringType(), False),  # JSON: table -> rows
    T.StructField("versions", T.StringType(), False),  # JSON: table -> version after the purge
    T.StructField("files_removed", T.LongType(), False),
    T.StructField("online_removed", T.LongType(), False),
    T.StructField("not_reached", T.StringType(), False),
]), ())
NOT_REACHED = ("raw files outside ingest.landing_dir; MLflow artifact stores that are not local folders; model "
               "copies outside RECSYS_HOME (downloads, other hosts); Redis replicas and backups; the influence "
               "of their events on the model's shared weights (gone at the next retrain)")
#: Tables that hold a ``user_id`` column and are deleted from (features are recomputed instead).
_BY_USER = (EVENTS_TABLE, TRAINING_TABLE, RECOMMENDATIONS_TABLE)
#: Refreshes tried before giving up when stream batches keep landing between the refresh and the purge.
_REFRESH_TRIES = 3


@dataclass
class ForgetSummary:
    """What one forget run did."""

    run_id: str
    people: int
    rows_deleted: dict[str, int] = field(default_factory=dict)
    files_removed: int = 0
    online_removed: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The summary as a JSON-able dict."""
        return asdict(self)


def run_forget(spark: SparkSession, lake: Lake, cfg: RecsysConfig, users: Sequence[str], *,
               now: datetime | None = None) -> ForgetSummary:
    """Forget ``users`` (the shop's raw ids) everywhere this job reaches (see the module docstring).

    Raises:
        ValueError: When ``users`` is empty.

    """
    if not users:
        raise ValueError("recsys forget needs at least one user id (--user or --users-file)")
    started, began = now or datetime.now(UTC), time.monotonic()
    run_id = f"forget-{started:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    ids = sorted({stored_id(cfg, u) for u in users})
    digests = audit_digests(cfg).many(ids)
    summary = ForgetSummary(run_id=run_id, people=len(ids))
    tombstones.record(lake, digests, started)
    log.info("%s: %d tombstone(s) recorded; new events of these people are dropped at ingest", run_id, len(ids))

    keys = _online_keys(lake, cfg, ids)  # read before the refresh removes them
    touched = [t for t in (*_BY_USER, QUARANTINE_TABLE) if lake.exists(t)]
    with lake.writing([*INGEST_TABLES, TRAINING_TABLE, RECOMMENDATIONS_TABLE], run_id):
        for table in (t for t in _BY_USER if t in touched):
            summary.rows_deleted[table] = lake.delete(table, _in("user_id", ids), metadata={"job": run_id}).rows
        if not cfg.privacy.pseudonymize and QUARANTINE_TABLE in touched:  # raw ids in the lines themselves
            summary.rows_deleted[QUARANTINE_TABLE] = lake.delete(
                QUARANTINE_TABLE, " OR ".join(_raw_line_of(u) for u in users), metadata={"job": run_id}).rows
    fault_point("forget_after_deletes")
    if cfg.online.enabled:  # before the refresh: a run killed after it can no longer find the keys in the lake
        store = open_store(cfg)
        try:
            summary.online_removed = store.forget(keys, ids)
        finally:
            store.close()
    for _attempt in range(_REFRESH_TRIES):
        if lake.exists(EVENTS_TABLE):
            refreshed = run_refresh(spark, lake, cfg)
            summary.rows_deleted.update({t: 0 for t in refreshed.tables})  # recomputed: no user row is left
        fault_point("forget_before_purge")
        online = open_store(cfg) if cfg.online.enabled else None
        try:
            purged = _purge(lake, cfg, run_id, online)
        finally:
            if online is not None:
                online.close()
        if purged is not None:
            summary.files_removed, summary.versions = purged
            break
        log.warning("%s: events changed between the refresh and the history purge (a stream batch landed); "
                    "refreshing again", run_id)
    else:
        raise LakeError(f"{run_id}: events kept changing between the refresh and the history purge "
                        f"({_REFRESH_TRIES} tries); run `recsys forget` again (it resumes)")
    summary.rows_deleted["model_bundles"] = _scrub_models(cfg, ids)
    landing = scrub_landing(Path(cfg.landing_dir), set(users))
    summary.rows_deleted["landing_lines"] = landing.lines_removed
    fault_point("forget_before_audit")
    _audit(lake, summary, digests, started)
    summary.seconds = round(time.monotonic() - began, 2)
    return summary


def lift(cfg: RecsysConfig, users: Sequence[str]) -> int:
    """Lift the tombstones of ``users`` (raw ids): their new events are ingested again. Returns how many."""
    from recsys_lib.lake import driver_lake

    lake = driver_lake(cfg)
    digests = audit_digests(cfg).many(sorted({stored_id(cfg, u) for u in users}))
    tombstones.record(lake, digests, datetime.now(UTC), lifted=True)
    return len(digests)


def _scrub_models(cfg: RecsysConfig, ids: list[str]) -> int:
    """Forget ``ids`` in every bundle under the local MLflow artifact store and the serving folder.

    Returns:
        How many bundles held any of them.

    """
    from recsys_lib.serving.model import serving_dir  # (loads TensorFlow)

    artifacts = cfg.mlflow_artifact_location
    roots = [serving_dir(cfg).parent]
    if "://" not in artifacts or artifacts.startswith("file:"):
        roots.append(Path(artifacts.removeprefix("file://").removeprefix("file:")))
    else:
        log.warning("forget: the MLflow artifact store %s is not a local folder; its bundles are not scrubbed "
                    "(retrain and export without these people)", artifacts)
    bundles = [b for root in roots for b in bundle_folders(root)]
    if not bundles:
        return 0
    from recsys_lib.models.scrub import scrub_bundle  # loads TensorFlow

    held = sum(1 for b in bundles if scrub_bundle(b, ids))
    log.info("forget: %d of %d model bundle(s) held these people; scrubbed", held, len(bundles))
    return held


def _online_keys(lake: Lake, cfg: RecsysConfig, ids: list[str]) -> dict[str, list[str]]:
    """Store keys of ``ids`` per table: the user row, and each user x category row."""
    tables = {name: e.table for name, e in entities(cfg.features).items()}
    keys: dict[str, list[str]] = {tables["user"]: list(ids)}
    pairs = tables[USER_CATEGORY]
    if lake.exists(pairs):
        found = lake.read_arrow(pairs, columns=["user_id", "category_id"])
        found = found.filter(pc.is_in(found.column("user_id"), value_set=pa.array(ids, pa.string())))
        keys[pairs] = sorted({key_of([u, c]) for u, c in zip(found.column("user_id").to_pylist(),
                                                              found.column("category_id").to_pylist(), strict=True)})
    return keys


def _in(column: str, values: Sequence[str]) -> str:
    """A SQL ``column IN (...)`` with each value quoted."""
    return f"{column} IN ({', '.join(_quoted(v) for v in values)})"


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _raw_line_of(user: str) -> str:
    """SQL matching quarantined raw lines whose ``user_id`` member is ``user`` (as a string or a number)."""
    pattern = r'"user_id"\s*:\s*"?' + re.escape(user) + r'"?\s*[,}]'
    return f"regexp_like(raw, {_quoted(pattern)})"


def _purge(lake: Lake, cfg: RecsysConfig, run_id: str, store: OnlineStore | None) -> tuple[int, dict[str, int]] | None:
    """Purge every table that held the people's rows, under every writer lease.

    Returns None, purging nothing, when a feature table does not cover the latest ``events``
    version (a stream batch landed after the refresh): the caller refreshes again. Otherwise
    ``events`` is purged first, and each feature table's coverage is carried forward to the
    version its purge ended at: the purge's commits add no row, and the stream, which folds
    ``events`` from the version after its coverage, must not ask for a removed log entry.
    An online store that was up to date is marked so at the new versions (its change feed
    is gone).
    """
    features = [e.table for e in entities(cfg.features).values()]
    wanted = [*_BY_USER, *features, *([] if cfg.privacy.pseudonymize else [QUARANTINE_TABLE])]
    removed, versions = 0, dict[str, int]()
    with lake.writing([*wanted, *INGEST_TABLES], run_id):
        present = [t for t in wanted if lake.exists(t)]
        events_at = lake.version(EVENTS_TABLE) if EVENTS_TABLE in present else None
        covers = {t: dict(lake.job_commit(t, "events_version") or {}) for t in present if t in features}
        if events_at is not None and any(int(c.get("events_version", -1)) != events_at or c.get("until")
                                         for c in covers.values()):
            return None
        applied = {t: (store.applied_version(t), lake.version(t)) for t in covers} if store else {}
        bought = store.purchases_version() if store else None
        published = published_lake(lake.spark, cfg)
        copies = [e for e in entities(cfg.features).values() if e.table in covers]
        for entity in copies:  # the published copies equal their tables now (raises, rather than keep a copy)
            publish(lake, published, entity, cfg.features, version=lake.version(entity.table))
        for table in present:  # events first (_BY_USER leads)
            carry = None
            if table in covers:
                carry = covers[table] | ({"events_version": versions[EVENTS_TABLE]} if events_at is not None else {})
            done = lake.purge_history(table, carry=carry or None)
            removed += int(done["files_removed"])
            versions[table] = int(done["version"])
        for entity in copies:  # their history goes too; they still equal their tables, at the purged versions
            done = published.purge_history(entity.table, carry={
                "job": "publish", SOURCE_VERSION: versions[entity.table], "source_table": lake.uri(entity.table)})
            removed += int(done["files_removed"])
            versions[f"published/{entity.table}"] = int(done["version"])
        if store is not None:
            for table, (was, version) in applied.items():
                if was == version:
                    store.set_applied(table, lake.version(table))
            if events_at is not None and bought == events_at:
                store.add_purchases([], lake.version(EVENTS_TABLE))
    return removed, versions


def _audit(lake: Lake, summary: ForgetSummary, digests: list[str], started: datetime) -> None:
    finished = datetime.now(UTC)
    rows = pa.table({
        "run_id": [summary.run_id] * len(digests), "digest": digests,
        "started_at": [started] * len(digests), "finished_at": [finished] * len(digests),
        "rows_deleted": [json.dumps(summary.rows_deleted, sort_keys=True)] * len(digests),
        "versions": [json.dumps(summary.versions, sort_keys=True)] * len(digests),
        "files_removed": [summary.files_removed] * len(digests),
        "online_removed": [summary.online_removed] * len(digests),
        "not_reached": [NOT_REACHED] * len(digests),
    }).cast(spark_to_arrow(FORGET_LOG_SPEC.schema))
    lake.append_arrow(FORGET_LOG_SPEC, rows)
