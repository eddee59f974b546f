"""Scoring every model on the holdout the same way, and reporting the comparison."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recsys_lib.core.config import EvaluateConfig
from recsys_lib.models import baselines
from recsys_lib.models.baselines import Scorer
from recsys_lib.models.holdout import Holdout, recent_indices
from recsys_lib.models.metrics import ranking_metrics, top_k

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

HEADLINE = ("recall@10", "recall@50", "recall@100", "ndcg@10", "ndcg@50", "map@10", "precision@10",
            "hit_rate@10", "coverage@100")


def evaluate(scorer: Scorer, holdout: Holdout, ks: Sequence[int], *, filter_purchased: bool,
             filter_seen: bool = False, block: int = 2048) -> dict[str, float]:
    """Rank the catalogue for every holdout user with ``scorer`` and compute the metrics.

    ``filter_purchased`` drops items the user bought before the cutoff; ``filter_seen``
    drops every item the user had any event with (for data without repeat interactions).
    """
    n_users, k_max = len(holdout.truth), max(ks)
    tops = []
    for start in range(0, n_users, block):
        users = np.arange(start, min(start + block, n_users))
        exclude = holdout.exclusions(users, purchased=filter_purchased, seen=filter_seen)
        tops.append(top_k(scorer(users), k_max, exclude))
    top = np.concatenate(tops) if tops else np.zeros((0, k_max), dtype=int)
    return ranking_metrics(top, holdout.truth, ks, len(holdout.items))


def baseline_scorers(spark: SparkSession, holdout: Holdout, ec: EvaluateConfig, seed: int = 42) -> dict[str, Scorer]:
    """Most-popular with recency decay, item-to-item co-occurrence and implicit ALS."""
    h, n_items = holdout.history, len(holdout.items)
    holdout_users = holdout.users.column("user_id").to_pylist()
    return {
        "popularity": baselines.popularity(h, n_items, holdout.cutoff.timestamp(), ec.popularity_half_life),
        "cooccurrence": baselines.cooccurrence(h, len(holdout.train_users), n_items, recent_indices(holdout)),
        "als": baselines.als(spark, h, n_items, holdout.train_users.get_indexer(holdout_users), rank=ec.als_rank,
                             iterations=ec.als_iterations, reg=ec.als_reg, alpha=ec.als_alpha, seed=seed),
    }


def embedding_scorer(queries: np.ndarray, items: np.ndarray) -> Scorer:
    """Dot products of precomputed query and item embeddings."""
    def score(users: np.ndarray) -> np.ndarray:
        return queries[users] @ items.T

    return score


def comparison_table(results: Mapping[str, Mapping[str, float]], columns: Sequence[str] = HEADLINE) -> str:
    """A fixed-width table: one row per model, one column per metric present."""
    cols = [c for c in columns if any(c in r for r in results.values())]
    width = max([len(n) for n in results] + [5])
    lines = [f"{'model':<{width}}  " + "  ".join(f"{c:>12}" for c in cols)]
    for name, metrics in results.items():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{metrics.get(c, float('nan')):>12.4f}" for c in cols))
    return "\n".join(lines)


def beats(results: Mapping[str, Mapping[str, float]], model: str, metrics: Sequence[str]) -> dict[str, bool]:
    """Whether ``model`` scores strictly above every other model, per metric."""
    others = [r for n, r in results.items() if n != model]
    return {m: all(results[model][m] > r[m] for r in others) for m in metrics}


def write_report(results: Mapping[str, Mapping[str, float]], path: str | Path, **extra: object) -> None:
    """``{"models": {name: metrics}, ...extra}`` as JSON."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"models": results, **extra}, indent=2, default=str))


def recall_plot(results: Mapping[str, Mapping[str, float]], ks: Sequence[int], path: str | Path) -> None:
    """PNG of recall@K against K for every model.

    Uses matplotlib's object API only, so it never switches the pyplot backend of
    the caller (a notebook keeps showing its own plots inline).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, metrics in results.items():
        ax.plot(list(ks), [metrics.get(f"recall@{k}", np.nan) for k in ks], marker="o", label=name)
    ax.set_xlabel("K")
    ax.set_ylabel("recall@K")
    ax.set_title("Holdout recall@K")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
