"""``recsys status``: the whole deployment on one screen, read without Spark.

Each part is read on its own, so one missing or broken part is reported as such and the rest
still shows:

* ``tables``: every Delta table under the lake root: version, rows (from the log's file
  statistics, no data read), last write and its age;
* ``stream``: the driver's health (alive, keeping up with the landing folder) and its last batch;
* ``model``: the champion, its holdout metrics and when it was registered;
* ``index``: the exported serving bundle: model version, items, index kind, when exported;
* ``online``: the online store's generation, rows per table and how many versions each table
  is behind its Delta table;
* ``dq``: the newest data-quality result, when the ``dq_results`` table exists.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from recsys_lib.core.config import RecsysConfig
from recsys_lib.lake.log import logged_rows

#: A stream whose unprocessed input is older than this reads as stale (the watchdog's default too).
STREAM_MAX_LAG = 300.0


def run_status(cfg: RecsysConfig, *, max_stream_lag: float = STREAM_MAX_LAG,
               now: float | None = None) -> dict[str, Any]:
    """Every part of the deployment (see the module docstring); a part that cannot be read says why."""
    now = time.time() if now is None else now
    parts: dict[str, Callable[[], Any]] = {
        "tables": lambda: tables(cfg, now), "stream": lambda: stream(cfg, max_stream_lag, now),
        "model": lambda: model(cfg), "index": lambda: index(cfg, now), "online": lambda: online(cfg),
        "dq": lambda: dq(cfg)}
    out: dict[str, Any] = {"home": cfg.home_dir, "at": datetime.fromtimestamp(now, UTC).isoformat()}
    for name, read in parts.items():
        try:
            out[name] = read()
        except (OSError, DeltaError, ValueError, RuntimeError) as exc:  # one broken part must not hide the rest
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def tables(cfg: RecsysConfig, now: float) -> dict[str, Any]:
    """Version, rows, last write and its age per Delta table under the lake root (local roots only).

    The published feature tables follow as ``published/<table>``, with the working table's version
    they reflect (``source_version``) and how many versions it has moved on since (``behind``).
    """
    out = _scan(cfg, cfg.lake_root, now, "")
    for name, info in _scan(cfg, cfg.published_root, now, "published/").items():
        working = out.get(name.removeprefix("published/"), {}).get("version")
        source = info.pop("source_version", None)
        info |= {"source_version": source,
                 "behind": working - source if working is not None and source is not None else None}
        out[name] = info
    return out


def _scan(cfg: RecsysConfig, where: str, now: float, prefix: str) -> dict[str, Any]:
    root = Path(where)
    out: dict[str, Any] = {}
    if "://" in where or not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if (p / "_delta_log").is_dir()):
        try:
            table = DeltaTable(str(folder), storage_options=cfg.lake.storage_options or None)
        except TableNotFoundError:
            continue  # a folder whose first commit has not landed yet
        actions = pa.table(table.get_add_actions(flatten=True))
        newest = table.history(1)[0]
        last = newest.get("timestamp")
        out[prefix + folder.name] = {
            "version": table.version(), "files": actions.num_rows, "rows": logged_rows(actions)[0],
            "last_write": _iso(last / 1000 if last else None), "age_s": round(now - last / 1000, 1) if last else None}
        if prefix:  # the newest publish's source (maintenance's compaction and vacuum commits record none)
            found = (json.loads(e["recsys"]).get("source_version") for e in table.history(20) if e.get("recsys"))
            out[prefix + folder.name]["source_version"] = next((v for v in found if v is not None), None)
    return out


def stream(cfg: RecsysConfig, max_lag: float, now: float) -> dict[str, Any]:
    """The stream driver's health and its newest batch."""
    from recsys_lib.streaming.health import stream_health
    from recsys_lib.streaming.job import last_batches

    health = stream_health(cfg, max_lag, now=now)
    batches = last_batches(cfg, 1)
    last = batches[-1] if batches else None
    return {"status": health["status"], "reason": health["reason"], "pid": health["pid"],
            "last_batch_at": _iso(health["last_batch_at"]),
            "last_batch": None if last is None else {k: last.get(k) for k in (
                "batch_id", "rows_in", "new_events", "quarantined", "duplicates", "seconds",
                "freshness_lag_max_s")}}


def model(cfg: RecsysConfig) -> dict[str, Any] | None:
    """The champion: version, holdout metrics, registration time (None without one)."""
    from mlflow.exceptions import MlflowException

    from recsys_lib.models import tracking

    if cfg.mlflow.tracking_uri is None and not Path(cfg.home_dir, "mlflow", "mlflow.db").exists():
        return None  # the embedded store does not exist yet: do not create it just to look
    client = tracking.configure(cfg)
    name = cfg.mlflow.registered_model
    try:
        mv = client.get_model_version_by_alias(name, tracking.CHAMPION)
    except MlflowException:
        return None
    metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
    return {"name": name, "version": str(mv.version), "run_id": mv.run_id,
            "registered": _iso(mv.creation_timestamp / 1000 if mv.creation_timestamp else None),
            "metrics": {k.removeprefix("holdout_").replace("_at_", "@"): round(v, 4)
                        for k, v in sorted(metrics.items()) if k.startswith("holdout_")}}


def index(cfg: RecsysConfig, now: float) -> dict[str, Any] | None:
    """The exported serving bundle (None before the first ``recsys export``)."""
    from recsys_lib.serving.model import serving_dir

    meta_path = serving_dir(cfg) / "meta.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    exported = meta_path.stat().st_mtime
    return {"model_version": meta.get("model_version"), "items": meta.get("items"), "index": meta.get("index"),
            "index_recall_at_100": meta.get("index_recall_at_100"), "exported": _iso(exported),
            "age_s": round(now - exported, 1)}


def online(cfg: RecsysConfig) -> dict[str, Any] | None:
    """The online store's generation, rows, and versions behind the Delta tables (None when disabled)."""
    if not cfg.online.enabled:
        return None
    if cfg.online.backend == "sqlite" and not Path(cfg.online_sqlite_path).exists():
        return {"backend": "sqlite", "status": "not created yet: run `recsys online sync`"}
    from recsys_lib.pipelines.online import run_stats

    stats = run_stats(cfg)
    applied, latest = stats.get("applied_versions", {}), stats.get("delta_versions", {})
    return {"backend": stats.get("backend"), "generation": stats.get("generation"), "rows": stats.get("rows"),
            "behind": {t: latest[t] - applied.get(t, -1) for t in latest}}


def dq(cfg: RecsysConfig) -> dict[str, Any] | None:
    """The newest row of the ``dq_results`` table (None before the first data-quality run)."""
    from recsys_lib.lake import driver_lake

    lake = driver_lake(cfg)
    if not lake.exists("dq_results"):
        return None
    rows = lake.read_arrow("dq_results").to_pylist()
    return max(rows, key=lambda r: str(r.get("checked_at"))) if rows else None


def format_status(report: dict[str, Any]) -> list[str]:
    """The report as lines for a terminal."""
    lines = [f"recsys status of {report['home']} at {report['at'][:19]}Z", "", "tables:"]
    tbl = report["tables"]
    if "error" in tbl:
        lines.append(f"  {tbl['error']}")
    for name, t in ({} if "error" in tbl else tbl).items():
        behind = f", {t['behind']} version(s) behind the lake" if t.get("behind") else ""
        lines.append(f"  {name:<28} v{t['version']:<6} {t['rows']:>12,} rows {t['files']:>6,} files  "
                     f"last write {_age(t['age_s'])} ago{behind}")
    s = report["stream"]
    lines += ["", f"stream:  {s.get('status', '-')}: {s.get('reason') or s.get('error')}"]
    if s.get("last_batch"):
        b = s["last_batch"]
        lines.append(f"         last batch {b['batch_id']} at {s['last_batch_at']}: {b['new_events']:,} new events, "
                     f"lag up to {b.get('freshness_lag_max_s')}s")
    m = report["model"]
    lines.append("model:   " + ("no champion yet" if not m else m.get("error") or
                              f"{m['name']} v{m['version']} (registered {m['registered']}): " +
                              ", ".join(f"{k} {v}" for k, v in m["metrics"].items() if k in (
                                  "recall@50", "ndcg@10", "recall@100"))))
    i = report["index"]
    lines.append("index:   " + ("not exported yet" if not i else i.get("error") or
                              f"model v{i['model_version']}, {i['items']:,} items, {i['index']} "
                              f"(recall@100 {i['index_recall_at_100']}), exported {_age(i['age_s'])} ago"))
    o = report["online"]
    lines.append("online:  " + ("disabled" if not o else o.get("error") or o.get("status") or
                              f"{o['backend']} generation {o['generation']}, versions behind "
                              + ", ".join(f"{t} {n}" for t, n in o["behind"].items())))
    d = report["dq"]
    lines.append("dq:      " + ("no data-quality run yet" if not d else d.get("error") or json.dumps(d, default=str)))
    return lines


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
