"""Evaluation against baselines, and the promotion gate.

Both build the holdout from the pinned inputs exactly as training does (same
cutoff), and re-score registered models on it, so a candidate and the champion
are always compared on the same users and items.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from recsys_lib.core.config import RecsysConfig
from recsys_lib.lake import Lake
from recsys_lib.models.holdout import Holdout, build_holdout
from recsys_lib.pipelines.ranking import served_metrics
from recsys_lib.pipelines.train import pinned_inputs

Say = Callable[[str], None]


def current_holdout(spark: SparkSession, lake: Lake, cfg: RecsysConfig) -> Holdout:
    """The holdout of the current training set (see :mod:`recsys_lib.models.holdout`)."""
    _, _, events, cutoff = pinned_inputs(spark, lake, cfg)
    try:
        return build_holdout(events, list(cfg.train.label_types), cutoff, cfg.features)
    finally:
        events.unpersist()


def run_evaluate(spark: SparkSession, lake: Lake, cfg: RecsysConfig, *, version: str | None = None,
                 baselines: bool = True, report_json: str | None = None, plot: str | None = None,
                 say: Say = print) -> dict[str, Any]:
    """Score the two-tower model (``version``, else the champion, else the latest) and the baselines.

    Returns:
        ``{"models": {name: metrics}, "cutoff": ..., "two_tower_version": ..., "beats_baselines": {...}}``.

    """
    from recsys_lib.models import tracking
    from recsys_lib.models.bundle import Bundle
    from recsys_lib.models.evaluate import (
        beats,
        comparison_table,
        recall_plot,
        write_report,
    )

    started = time.monotonic()
    holdout = current_holdout(spark, lake, cfg)
    say(f"holdout from {holdout.cutoff:%Y-%m-%d}: {len(holdout.truth):,} users, {len(holdout.items):,} items")
    results: dict[str, dict[str, float]] = {}
    client = tracking.configure(cfg)
    chosen = (tracking.model_version(client, cfg.mlflow.registered_model, version=version) if version else
              tracking.model_version(client, cfg.mlflow.registered_model, alias=tracking.CHAMPION)
              or tracking.model_version(client, cfg.mlflow.registered_model))
    if version and chosen is None:
        raise ValueError(f"model '{cfg.mlflow.registered_model}' has no version {version}")
    if chosen is not None:
        results["two_tower"] = served_metrics(Bundle(chosen.bundle), holdout, cfg)
    tuned: dict[str, Any] = {}
    if baselines:
        results |= baseline_results(spark, holdout, cfg, tuned=tuned)
    if tuned:
        say(f"baselines tuned on the {cfg.evaluate.tune_days} day(s) before the cutoff "
            f"({tuned['inner_split_users']:,} users, {tuned['metric']}): popularity half-life "
            f"{tuned['popularity_half_life'] / 3600:g}h, item-kNN {tuned['item_knn']}, EASE λ={tuned['ease_reg']:g}"
            + (f" (restricted to the {tuned['ease_items']:,} most interacted of {len(holdout.items):,} items: "
               "evaluate.ease_max_items)" if tuned["ease_items"] < len(holdout.items) else ""))
    say(comparison_table(results))
    wins = beats(results, "two_tower", ["recall@50", "ndcg@10"]) if "two_tower" in results and len(results) > 1 \
        else {}
    if wins:
        say("two-tower beats every baseline on " + ", ".join(f"{m}: {'yes' if w else 'NO'}" for m, w in wins.items()))
    extra = {"cutoff": holdout.cutoff.isoformat(), "two_tower_version": chosen.version if chosen else None,
             "filter_purchased": cfg.evaluate.filter_purchased, "filter_seen": cfg.evaluate.filter_seen,
             "beats_baselines": wins, "baseline_settings": tuned,
             "seconds": round(time.monotonic() - started, 2)}
    if report_json:
        write_report(results, report_json, **extra)
    if plot:
        Path(plot).parent.mkdir(parents=True, exist_ok=True)
        recall_plot(results, cfg.evaluate.ks, plot)
    return {"models": results, **extra}


def baseline_results(spark: SparkSession, holdout: Holdout, cfg: RecsysConfig,
                     tuned: dict[str, Any] | None = None) -> dict[str, dict[str, float]]:
    """Every baseline's metrics on ``holdout``, tuned on the inner split (``tuned`` receives the settings)."""
    from recsys_lib.models.evaluate import baseline_scorers, evaluate

    ec = cfg.evaluate
    return {name: evaluate(scorer, holdout, ec.ks, filter_purchased=ec.filter_purchased, filter_seen=ec.filter_seen)
            for name, scorer in baseline_scorers(spark, holdout, ec, cfg.train.seed, tuned=tuned).items()}


def run_promote(spark: SparkSession, lake: Lake, cfg: RecsysConfig, *, version: str | None = None,
                say: Say = print) -> dict[str, Any]:
    """Move the ``champion`` alias to ``version`` (default: the latest) if it beats the champion on the holdout.

    Each version is judged as it is served: re-ranked when its ranking stage is used (:func:`served_metrics`).

    With ``evaluate.gate_baselines`` it must also beat the strongest baseline; the reason names it.

    Raises:
        ValueError: If the model has no versions (or not ``version``).

    """
    from recsys_lib.models import tracking
    from recsys_lib.models.bundle import Bundle

    client = tracking.configure(cfg)
    name, metric = cfg.mlflow.registered_model, cfg.evaluate.promote_metric
    candidate = tracking.model_version(client, name, version=version)
    if candidate is None:
        raise ValueError(f"model '{name}' has no version {version or '(none registered)'}: run `recsys train` first")
    champion = tracking.model_version(client, name, alias=tracking.CHAMPION)
    if champion is not None and champion.version == candidate.version:
        say(f"version {candidate.version} is already the champion")
        return {"promoted": False, "reason": "already champion", "candidate": candidate.version,
                "champion": champion.version}
    holdout = current_holdout(spark, lake, cfg)
    scores = {"candidate": served_metrics(Bundle(candidate.bundle), holdout, cfg)}
    if champion is not None:
        scores["champion"] = served_metrics(Bundle(champion.bundle), holdout, cfg)
    if metric not in scores["candidate"]:
        raise ValueError(f"evaluate.promote_metric: {metric!r} is not a computed metric "
                         f"(have {sorted(scores['candidate'])})")
    promote, reason = tracking.promotion_decision(metric, scores["candidate"][metric],
                                                  scores["champion"][metric] if champion else None,
                                                  cfg.evaluate.promote_margin)
    if promote and cfg.evaluate.gate_baselines:
        baseline_scores = {n: m[metric] for n, m in baseline_results(spark, holdout, cfg).items()}
        scores |= {f"baseline:{n}": {metric: v} for n, v in baseline_scores.items()}
        promote, against = tracking.baseline_decision(metric, scores["candidate"][metric], baseline_scores)
        reason = f"{reason}; {against}" if promote else against
    if promote:
        client.set_registered_model_alias(name, tracking.CHAMPION, candidate.version)
    client.set_model_version_tag(name, candidate.version, "promotion", reason)
    say(("promoted" if promote else "not promoted") + f" version {candidate.version}: {reason}")
    return {"promoted": promote, "reason": reason, "candidate": candidate.version,
            "champion": champion.version if champion else None,
            "metric": metric, "scores": {k: v[metric] for k, v in scores.items()}}
