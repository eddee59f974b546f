"""The full-refresh job: recompute every feature table from ``events``.

Each table is replaced in one commit (a new table version) whose metadata names
the ``events`` version read and the watermark covered, so an incremental job
can fence itself against it (issue: streaming).
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys_lib.core.config import RecsysConfig
from recsys_lib.core.faults import fault_point
from recsys_lib.core.schema import EVENTS_TABLE
from recsys_lib.features import USER, USER_CATEGORY, Entity, entities, fold
from recsys_lib.features.decay import event_bounds
from recsys_lib.features.generations import GENERATIONS_TABLE, record_generation
from recsys_lib.features.layers import table_spec
from recsys_lib.features.publish import publish_all
from recsys_lib.features.quality import DQ_TABLE, TableCheck, ensure_constraints
from recsys_lib.lake import Lake

log = logging.getLogger(__name__)


class FeatureRefreshError(RuntimeError):
    """The refresh could not run (e.g. no events table)."""


@dataclass
class RefreshSummary:
    """What one full refresh wrote."""

    events_version: int
    watermark: str | None
    until: str | None
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    online: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    #: The ``feature_generations`` version that recorded this refresh as complete.
    generation_version: int = -1
    #: Each table's data-quality outcome (empty with ``dq.enabled: false``).
    dq: list[dict[str, Any]] = field(default_factory=list)
    #: What :func:`~recsys_lib.features.publish.publish_all` did per table (after the manifest).
    published: dict[str, Any] = field(default_factory=dict)
    #: Seconds of the data-quality gate and of publishing (parts of ``seconds``).
    dq_seconds: float = 0.0
    publish_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The summary as a JSON-able dict."""
        return asdict(self)


def run_refresh(spark: SparkSession, lake: Lake, cfg: RecsysConfig, *, until: datetime | None = None,
                only: list[str] | None = None, events_version: int | None = None) -> RefreshSummary:
    """Recompute the feature tables from ``events`` (optionally only events up to ``until``).

    Args:
        spark: The session.
        lake: The lake.
        cfg: Config.
        until: Only fold events at or before this time.
        only: Only these entities (default: all).
        events_version: Read this ``events`` version (default: the latest).

    """
    started = time.monotonic()
    if not lake.exists(EVENTS_TABLE):
        raise FeatureRefreshError(f"no '{EVENTS_TABLE}' table at {lake.uri(EVENTS_TABLE)}: run `recsys ingest` first")
    if events_version is None:
        events_version = lake.version(EVENTS_TABLE)
    events = lake.read(EVENTS_TABLE, version=events_version)
    if until is not None:
        events = events.where(F.col("event_ts") <= F.lit(until).cast("timestamp"))
    watermark, span = event_bounds(events)
    stamp = datetime.now(UTC)
    summary = RefreshSummary(events_version=events_version, watermark=_iso(watermark), until=_iso(until))
    todo = {n: e for n, e in entities(cfg.features).items() if not only or n in only}
    refresh_id = f"{stamp:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    with lake.writing([*(e.table for e in todo.values()), GENERATIONS_TABLE, DQ_TABLE],
                      f"features refresh {refresh_id}"):
        _refresh_tables(lake, cfg, events, todo, summary, stamp, span, refresh_id)
        if cfg.dq.enabled:
            t0 = time.monotonic()
            _quality_gate(lake, cfg, todo, summary, refresh_id)
            summary.dq_seconds = round(time.monotonic() - t0, 2)
        # the manifest, committed last: until it lands, batch readers stay on the previous complete refresh
        summary.generation_version = record_generation(
            lake, refresh_id, {t: int(info["version"]) for t, info in summary.tables.items()}, events_version,
            summary.until)
    # the published copies (one row per key, any Delta reader), only for a refresh that passed its gate
    t0 = time.monotonic()
    summary.published = publish_all(lake, cfg, list(todo.values()),
                                    versions={t: int(info["version"]) for t, info in summary.tables.items()})
    summary.publish_seconds = round(time.monotonic() - t0, 2)
    if cfg.online.enabled:
        summary.online = _publish_online(lake, cfg)
    summary.seconds = round(time.monotonic() - started, 2)
    return summary


def _quality_gate(lake: Lake, cfg: RecsysConfig, todo: dict[str, Entity], summary: RefreshSummary,
                  refresh_id: str) -> None:
    """Check every refreshed table, record the results, and stop before publishing if one failed.

    Raises:
        DataQualityError: If a table failed an expectation (nothing after the tables is committed).

    """
    from recsys_lib.features.quality import DataQualityError, check_table, record

    def check(entity: Entity) -> TableCheck:
        info = summary.tables[entity.table]
        return check_table(lake, entity, int(info["version"]), int(info["rows"]), cfg.dq,
                           previous_version=info.get("replaced"))

    with ThreadPoolExecutor(max_workers=max(len(todo), 1)) as pool:  # small Spark jobs: latency-bound, so concurrent
        results = list(pool.map(check, todo.values()))
    for result in results:
        summary.tables[result.table]["dq"] = "passed" if result.passed else result.failures
    record(lake, results, refresh_id, "features_refresh")
    if cfg.dq.log_to_mlflow:
        _log_dq_to_mlflow(cfg, results, refresh_id, "features_refresh")
    summary.dq = [r.to_json() for r in results]
    if not all(r.passed for r in results):
        raise DataQualityError(results)


def _log_dq_to_mlflow(cfg: RecsysConfig, results: list[TableCheck], run_id: str, job: str) -> str | None:
    """One MLflow run per check (``dq-<job>``): per-table rows and pass/fail as metrics, the failures as JSON.

    Returns the MLflow run id, or None when MLflow is not installed (the ``dq_results`` rows stay the
    record; the cause is logged at WARNING).
    """
    try:
        import mlflow
    except ImportError as exc:
        log.warning("data-quality results not logged to MLflow (%s); they are in %s", exc, DQ_TABLE)
        return None
    from recsys_lib.models import tracking

    tracking.configure(cfg)
    with mlflow.start_run(run_name=f"dq-{job}") as run:
        mlflow.set_tags({"job": job, "refresh_id": run_id, "dq_passed": all(r.passed for r in results)})
        mlflow.log_metrics({f"{r.table}.{k}": v for r in results
                            for k, v in (("rows", float(r.rows)), ("passed", float(r.passed)),
                                         ("version", float(r.version)))})
        mlflow.log_dict({"results": [r.to_json() for r in results]}, "dq/results.json")
        return str(run.info.run_id)


def _publish_online(lake: Lake, cfg: RecsysConfig) -> dict[str, Any]:
    """Load the refreshed tables into a new online generation and switch readers to it.

    A failure leaves readers on the previous generation (consistent, older) and is reported,
    not raised: the Delta tables are the truth, and ``recsys online sync`` loads them later.
    """
    from recsys_lib.features import online
    from recsys_lib.lake import driver_lake
    from recsys_lib.online import OnlineStoreError, open_store

    store = open_store(cfg)
    try:
        return online.load_generation(store, driver_lake(cfg), cfg)
    except (OnlineStoreError, OSError) as exc:
        log.warning("online store not updated after the refresh (readers stay on the previous generation; "
                    "run `recsys online sync`): %s", exc)
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        store.close()


def _refresh_tables(lake: Lake, cfg: RecsysConfig, events: DataFrame, todo: dict[str, Entity],
                    summary: RefreshSummary, stamp: datetime, span: tuple[float, float] | None,
                    refresh_id: str) -> None:
    """Fold and overwrite each table in ``todo``.

    User x category goes first: the user table derives its category weights from those
    states. This, ``large_input`` and ``span`` all give the same states as a micro-batch's
    fold (tests/spark/test_features_exactness.py).
    """
    order = sorted(todo, key=lambda n: n == USER)
    category_states = None
    for name in order:
        entity = todo[name]
        t0 = time.monotonic()
        states = fold(events, entity, cfg.features, updated_at=stamp,
                      category_states=category_states if name == USER else None, large_input=True, span=span)
        meta = {"job": "features_refresh", "events_version": summary.events_version, "watermark": summary.watermark,
                "until": summary.until, "refresh_id": refresh_id}
        if summary.tables:
            fault_point("between_refresh_tables")  # a table is overwritten, the next is not yet
        replaced = lake.version(entity.table) if lake.exists(entity.table) else None
        if cfg.dq.enabled:  # before the overwrite, so the refresh's commit stays the table's newest
            lake.create(table_spec(entity))
            ensure_constraints(lake, entity)
        result = lake.overwrite(table_spec(entity), states, metadata=meta)
        if name == USER_CATEGORY:
            category_states = lake.read(entity.table, version=result.version)
        summary.tables[entity.table] = {"version": result.version, "rows": result.rows, "replaced": replaced,
                                        "files": result.files, "seconds": round(time.monotonic() - t0, 2)}


def _iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat()


def format_refresh(summary: RefreshSummary) -> str:
    """Human-readable refresh summary."""
    lines = [f"full refresh from events version {summary.events_version} "
             f"(watermark {summary.watermark}{', until ' + summary.until if summary.until else ''})"]
    for table, info in summary.tables.items():
        lines.append(f"  {table:<24} version {info['version']:>4}  rows {info['rows']:>10,}  {info['seconds']:.1f}s")
    stale = sorted(t for t, info in summary.published.items() if "error" in info)
    if stale:
        lines.append(f"  published tables NOT updated: {', '.join(stale)} (`recsys maintain` catches up)")
    if summary.online:
        info = summary.online
        lines.append(f"  online store: generation {info.get('generation')} loaded in {info.get('seconds')}s"
                     if "error" not in info else f"  online store NOT updated: {info['error']}")
    if summary.dq:
        lines.append(f"  data quality: {sum(d['passed'] for d in summary.dq)}/{len(summary.dq)} tables passed "
                     f"({summary.dq_seconds:.1f}s); published in {summary.publish_seconds:.1f}s")
    lines.append(f"  total {summary.seconds:.1f}s")
    return "\n".join(lines)
