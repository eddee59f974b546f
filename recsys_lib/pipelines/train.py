"""The training job: two-tower model from the point-in-time training set, tracked in MLflow.

1. Pin ``training_examples`` at its current version, and ``events`` at the version
   that training set was built from.
2. Cutoff D = start of the last ``train.holdout_days`` days with labels. Train on
   labels before D (warm start: only the ``train.warm_start_days`` days before D).
3. Vocabularies (users with training labels, every item seen before D), numeric
   normalisation and item sampling probabilities come from the training rows.
4. Fit under the configured strategy, streaming the snapshot's Parquet files.
5. Evaluate on the holdout; export the query tower, item embeddings from the
   current ``item_features`` and the ANN index; log all of it and register.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys_lib.core.config import RecsysConfig, TrainConfig
from recsys_lib.core.schema import EVENTS_TABLE
from recsys_lib.lake import Lake
from recsys_lib.lake.snapshot import snapshot
from recsys_lib.models.holdout import Holdout, build_holdout, holdout_cutoff
from recsys_lib.pipelines.training import TRAINING_TABLE

Say = Callable[[str], None]


@dataclass
class Prepared:
    """Pinned inputs, the training files and the holdout for one run."""

    cutoff: datetime
    since: datetime | None
    events_version: int
    training_version: int
    files: list[str]
    rows: int
    spec: Any
    prior: Any
    holdout: Holdout


def pinned_inputs(spark: SparkSession, lake: Lake, cfg: RecsysConfig) -> tuple[int, int, DataFrame, datetime]:
    """(training set version, events version it was built from, those events, holdout cutoff).

    Raises:
        ValueError: If there is no training set yet.

    """
    if not lake.exists(TRAINING_TABLE):
        raise ValueError(f"no '{TRAINING_TABLE}' table: run `recsys training-set build` first")
    training_version = lake.version(TRAINING_TABLE)
    events_version = lake.job_metadata(TRAINING_TABLE, "events_version")
    # cached: the holdout scans events several times, and tables spanning years have thousands of day partitions
    events = lake.read(EVENTS_TABLE, version=None if events_version is None else int(events_version)).cache()
    cutoff = holdout_cutoff(events, list(cfg.train.label_types), cfg.train.holdout_days)
    return training_version, int(events_version if events_version is not None else lake.version(EVENTS_TABLE)), \
        events, cutoff


def prepare(spark: SparkSession, lake: Lake, cfg: RecsysConfig, *, base_spec: Any = None,
            inner_days: int | None = None) -> Prepared:
    """Everything the TensorFlow side needs (see the module docstring); ``base_spec`` means warm start.

    ``inner_days`` prepares the inner time split instead, for tuning: events from the holdout's cutoff
    on are dropped, and the cutoff moves ``inner_days`` earlier (its holdout is the inner split's).
    """
    tc = cfg.train
    training_version, events_version, events, cutoff = pinned_inputs(spark, lake, cfg)
    since = cutoff - timedelta(days=tc.warm_start_days) if base_spec is not None else None
    try:
        if inner_days is not None:
            visible = events.where(F.col("event_ts") < F.lit(cutoff))
            cutoff -= timedelta(days=inner_days)
            holdout = build_holdout(visible, list(tc.label_types), cutoff, cfg.features)
        else:
            holdout = build_holdout(events, list(tc.label_types), cutoff, cfg.features)
    finally:
        events.unpersist()  # the holdout is collected; a notebook session keeps running after this
    rows_df = lake.read(TRAINING_TABLE, version=training_version).where(
        (F.col("label_date") < F.lit(cutoff.date())) & F.col("label_type").isin(*tc.label_types))
    if since is not None:
        rows_df = rows_df.where(F.col("label_date") >= F.lit(since.date()))
    rows_df = rows_df.cache()
    try:
        return _prepared(cfg, rows_df, holdout, base_spec, since, cutoff, events_version, training_version,
                         lake)
    finally:
        rows_df.unpersist()


def _prepared(cfg: RecsysConfig, rows_df: DataFrame, holdout: Holdout, base_spec: Any, since: datetime | None,
              cutoff: datetime, events_version: int, training_version: int, lake: Lake) -> Prepared:
    """The vocabularies, normalisation and file list, from the cached training rows."""
    from recsys_lib.models.data import ItemPrior
    from recsys_lib.models.two_tower import ModelSpec

    tc = cfg.train
    query_numeric = [c for c in rows_df.columns
                     if c.startswith("u_") and c not in ("u_as_of", "u_recent_items", "u_top_categories")]
    item_numeric = [c for c in rows_df.columns if c.startswith("i_") and c != "i_as_of"]
    counts = {r["item_id"]: r["n"] for r in rows_df.groupBy("item_id").agg(F.count("*").alias("n")).collect()}
    rows = sum(counts.values())
    if rows == 0:
        raise ValueError(f"no training labels of types {list(tc.label_types)} before the holdout cutoff {cutoff}")
    users = sorted(r[0] for r in rows_df.select("user_id").distinct().collect())
    items = holdout.items
    cats = sorted({c for c in items["category_id"].dropna()})
    item_cats = {i: (c if isinstance(c, str) else "") for i, c in zip(items["item_id"], items["category_id"],
                                                                       strict=True)}
    if base_spec is not None:
        spec = base_spec.grown(users, list(items["item_id"]), item_cats, cats)
    else:
        stats = _log_stats(rows_df, query_numeric + item_numeric)
        spec = ModelSpec(users=users, items=list(items["item_id"]), item_categories=[item_cats[i] for i in
                                                                                      items["item_id"]],
                         categories=cats, query_numeric=query_numeric, item_numeric=item_numeric,
                         query_mean=[stats[c][0] for c in query_numeric],
                         query_std=[stats[c][1] for c in query_numeric],
                         item_mean=[stats[c][0] for c in item_numeric], item_std=[stats[c][1] for c in item_numeric],
                         recent_len=cfg.features.recent_items, top_categories=cfg.features.affinity_top_k,
                         **model_settings(tc))
    snap = snapshot(lake.uri(TRAINING_TABLE), training_version, cfg.lake.storage_options)
    first = since.date().isoformat() if since else ""
    files = [f.uri for f in snap.files if first <= (f.partition.get("label_date") or "") < cutoff.date().isoformat()]
    return Prepared(cutoff=cutoff, since=since, events_version=events_version, training_version=training_version,
                    files=files, rows=rows, spec=spec, prior=ItemPrior.from_counts(counts), holdout=holdout)


def model_settings(tc: TrainConfig) -> dict[str, Any]:
    """The :class:`~recsys_lib.models.two_tower.ModelSpec` fields that come from ``train`` settings."""
    return {"embedding_dim": tc.embedding_dim, "tower_layers": list(tc.tower_layers), "oov_buckets": tc.oov_buckets,
            "price_buckets": list(tc.price_buckets), "temperature": tc.temperature,
            "user_id_embedding": tc.user_id_embedding, "affinity_smoothing": tc.affinity_smoothing}


def _log_stats(df: DataFrame, columns: list[str]) -> dict[str, tuple[float, float]]:
    if not columns:
        return {}
    aggs = []
    for c in columns:
        x = F.log1p(F.greatest(F.col(c).cast("double"), F.lit(0.0)))
        aggs += [F.avg(x).alias(f"m_{c}"), F.stddev_pop(x).alias(f"s_{c}")]
    row = df.agg(*aggs).first()
    if row is None:  # an aggregate without grouping always yields one row
        raise RuntimeError(f"aggregating the log statistics of {columns} returned no row")
    return {c: (float(row[f"m_{c}"] or 0.0), float(row[f"s_{c}"] or 1.0)) for c in columns}


def holdout_metrics(model: Any, holdout: Holdout, cfg: RecsysConfig) -> dict[str, float]:
    """The model's metrics on ``holdout`` (queries and items encoded by the full model)."""
    from recsys_lib.models.data import candidate_chunk, encode, query_chunk
    from recsys_lib.models.evaluate import embedding_scorer, evaluate

    queries = encode(model.query, query_chunk(holdout.users, model.spec))
    items = encode(model.candidate, candidate_chunk(pa.Table.from_pandas(holdout.items, preserve_index=False),
                                                    model.spec))
    return evaluate(embedding_scorer(queries, items), holdout, cfg.evaluate.ks,
                    filter_purchased=cfg.evaluate.filter_purchased, filter_seen=cfg.evaluate.filter_seen)


def run_train(spark: SparkSession, lake: Lake, cfg: RecsysConfig, *, warm_start: bool = False,
              say: Say = print) -> dict[str, Any]:
    """Train (or warm-start from the champion), evaluate, export, log to MLflow and register a new version.

    Raises:
        ValueError: On missing inputs, or ``warm_start`` without a champion.

    """
    import mlflow

    from recsys_lib.models import tracking
    from recsys_lib.models.bundle import Bundle
    from recsys_lib.models.data import chunk_source
    from recsys_lib.models.trainer import fit

    started = time.monotonic()
    client = tracking.configure(cfg)
    base = None
    if warm_start:
        base = tracking.model_version(client, cfg.mlflow.registered_model, alias=tracking.CHAMPION)
        if base is None:
            raise ValueError(f"--warm-start needs a '{tracking.CHAMPION}' version of "
                             f"'{cfg.mlflow.registered_model}': train and promote one first")
    base_bundle = Bundle(base.bundle) if base else None
    prep = prepare(spark, lake, cfg, base_spec=base_bundle.spec if base_bundle else None)
    say(f"training on {prep.rows:,} labels in {len(prep.files)} files before {prep.cutoff:%Y-%m-%d}"
        + (f" from {prep.since:%Y-%m-%d} (warm start from version {base.version})" if base else "")
        + f"; holdout: {len(prep.holdout.truth):,} users, {len(prep.holdout.items):,} catalogue items")
    tc = cfg.train

    with mlflow.start_run(run_name="warm-start" if warm_start else "train") as run:
        mlflow.log_params({f"train.{k}": v for k, v in tc.model_dump().items()} | {
            "rows": prep.rows, "users_vocab": len(prep.spec.users), "items_vocab": len(prep.spec.items)})
        _log_inputs(lake, prep)
        mlflow.set_tags({"events_version": prep.events_version, "training_examples_version": prep.training_version,
                         "git_commit": tracking.git_commit() or "unknown", "cutoff": prep.cutoff.isoformat(),
                         "warm_start": warm_start, "base_version": base.version if base else ""})

        n_epochs = tc.warm_start_epochs if warm_start else tc.epochs
        spent: list[float] = []

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, step=epoch)
            spent.append(metrics["epoch_seconds"])
            left = (n_epochs - epoch - 1) * sum(spent) / len(spent)
            say(f"  epoch {epoch + 1}/{n_epochs}: loss {metrics.get('loss', float('nan')):.1f} "
                f"({metrics['epoch_seconds']:.1f}s" + (f", ETA {left:.0f}s)" if left else ")"))

        chunks = chunk_source(prep.files, prep.spec, prep.prior, tc)
        result = fit(prep.spec, chunks, prep.rows, tc, epochs=tc.warm_start_epochs if warm_start else None,
                     init_weights=base_bundle.weights if base_bundle else None, on_epoch=on_epoch)
        metrics = holdout_metrics(result.model, prep.holdout, cfg)
        mlflow.log_metrics({f"holdout_{k}".replace("@", "_at_"): v for k, v in metrics.items()}
                           | {"train_seconds": result.seconds, "examples_per_second": result.examples_per_second})
        say(f"  holdout recall@50 {metrics.get('recall@50', 0):.4f}, ndcg@10 {metrics.get('ndcg@10', 0):.4f} "
            f"({result.examples_per_second:,.0f} examples/s)")
        ranker, ranking = _ranking_stage(result.model, prep, cfg, say)
        with tempfile.TemporaryDirectory() as tmp:
            bundle_dir = export_bundle(spark, lake, cfg, result.model, prep, metrics, Path(tmp) / "bundle",
                                       ranker=ranker, ranking=ranking)
            _log_report(metrics, cfg, Path(tmp), result.epochs)
            version = tracking.log_bundle(bundle_dir, cfg.mlflow.registered_model)
    say(f"registered '{cfg.mlflow.registered_model}' version {version} (run {run.info.run_id})")
    return {"version": version, "run_id": run.info.run_id, "metrics": metrics, "rows": prep.rows, "ranking": ranking,
            "epochs": result.epochs, "train_seconds": round(result.seconds, 2),
            "examples_per_second": round(result.examples_per_second, 1), "warm_start": warm_start,
            "cutoff": prep.cutoff.isoformat(), "seconds": round(time.monotonic() - started, 2)}


def _ranking_stage(model: Any, prep: Prepared, cfg: RecsysConfig, say: Say) -> tuple[Any, dict[str, Any] | None]:
    """With ``ranking.enabled``: the ranker and its report, logged to the active MLflow run (else None, None)."""
    if not cfg.ranking.enabled:
        return None, None
    import mlflow

    from recsys_lib.pipelines.ranking import train_ranker

    ranker, report = train_ranker(model, prep, cfg)
    mlflow.log_metrics({f"ranked_{k}".replace("@", "_at_"): v for k, v in report["retrieval_and_ranking"].items()}
                       | {"ranker_examples_per_second": report["examples_per_second"]})
    metric = report["metric"]
    say(f"  ranking stage on {report['pairs']:,} pairs ({report['examples_per_second']:,.0f} examples/s): "
        f"{metric} {report['retrieval'][metric]:.4f} by retrieval alone, "
        f"{report['retrieval_and_ranking'][metric]:.4f} re-ranked: " + ("used" if report["used"] else "not used"))
    return ranker, report


def export_bundle(spark: SparkSession, lake: Lake, cfg: RecsysConfig, model: Any, prep: Prepared,
                  metrics: dict[str, float], folder: Path, *, ranker: Any = None,
                  ranking: dict[str, Any] | None = None) -> Path:
    """Item embeddings from the current item features, the ANN index and the query tower, into ``folder``.

    A ``ranker`` goes into ``folder/ranker`` and its report into the meta's ``ranking``.
    """
    from recsys_lib.models.bundle import save_bundle
    from recsys_lib.models.data import encode, query_chunk
    from recsys_lib.pipelines.serve import index_current_items

    queries = encode(model.query, query_chunk(prep.holdout.users, model.spec))
    items, embeddings, index, recall, _ = index_current_items(spark, cfg, model, queries)
    popular = [str(i) for i, _ in sorted(zip(prep.prior.ids, prep.prior.probs, strict=True),
                                         key=lambda x: -x[1])[:200]]
    meta = {"cutoff": prep.cutoff.isoformat(), "events_version": prep.events_version,
            "training_examples_version": prep.training_version, "metrics": metrics,
            "index_recall_at_100": recall, "popular": popular, "items": len(embeddings),
            "exported_at": datetime.now().astimezone().isoformat()}
    if ranking is not None:
        meta["ranking"] = {k: v for k, v in ranking.items() if k != "epochs"}
    saved = save_bundle(folder, model, items.to_pandas(), np.asarray(embeddings), index, meta)
    if ranker is not None:
        from recsys_lib.models.ranking import save_ranker

        save_ranker(ranker, saved / "ranker")
    return saved


def _log_inputs(lake: Lake, prep: Prepared) -> None:
    """Record the Delta versions read as the run's MLflow dataset inputs (the Datasets panel of the UI)."""
    import mlflow
    from mlflow.data.delta_dataset_source import DeltaDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    for table, version, context in ((TRAINING_TABLE, prep.training_version, "training"),
                                    (EVENTS_TABLE, prep.events_version, "holdout")):
        source = DeltaDatasetSource(path=lake.uri(table), delta_table_version=version)
        mlflow.log_input(MetaDataset(source, name=table, digest=f"v{version}"),  # type: ignore[abstract]
                         context=context)


def _log_report(metrics: dict[str, float], cfg: RecsysConfig, tmp: Path, epochs: list[dict[str, float]]) -> None:
    import mlflow

    from recsys_lib.models.evaluate import loss_plot, recall_plot, write_report

    write_report({"two_tower": metrics}, tmp / "evaluation.json")
    recall_plot({"two_tower": metrics}, cfg.evaluate.ks, tmp / "recall_at_k.png")
    loss_plot(epochs, tmp / "loss.png")
    for name in ("evaluation.json", "recall_at_k.png", "loss.png"):
        mlflow.log_artifact(str(tmp / name), "evaluation")
