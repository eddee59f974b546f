"""Scoring every model on the holdout the same way, and reporting the comparison."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

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
    top = ranked(scorer, holdout, max(ks), filter_purchased=filter_purchased, filter_seen=filter_seen, block=block)
    return ranking_metrics(top, holdout.truth, ks, len(holdout.items))


def ranked(scorer: Scorer, holdout: Holdout, k: int, *, filter_purchased: bool, filter_seen: bool = False,
           block: int = 2048) -> np.ndarray:
    """Every holdout user's top ``k`` catalogue indices by ``scorer``, with the filters of :func:`evaluate`."""
    return _top_in_blocks(scorer, len(holdout.truth), k, block,
                          lambda users: holdout.exclusions(users, purchased=filter_purchased, seen=filter_seen))


def _top_in_blocks(scorer: Scorer, n_users: int, k: int, block: int,
                   exclusions: Callable[[np.ndarray], list[list[int]] | None] | None = None) -> np.ndarray:
    """Top ``k`` per user row 0..``n_users``-1, scored ``block`` users at a time (bounded memory)."""
    tops = []
    for start in range(0, n_users, block):
        users = np.arange(start, min(start + block, n_users))
        tops.append(top_k(scorer(users), k, exclusions(users) if exclusions else None))
    return np.concatenate(tops) if tops else np.zeros((0, k), dtype=int)


@dataclass
class InnerSplit:
    """The holdout's history split once more in time, for tuning baselines without touching the holdout.

    ``train`` is the history before ``cutoff - days``; ``users`` (train-user indices) are those
    with labels in the ``days`` before the holdout's cutoff on items ``train`` knows; ``truth``
    their item sets. Nothing after the holdout's cutoff is used.
    """

    train: pd.DataFrame
    users: np.ndarray
    truth: list[set[int]]
    cutoff_s: float


def inner_split(holdout: Holdout, days: int) -> InnerSplit:
    """Split ``holdout.history`` at ``days`` before the holdout's cutoff (see :class:`InnerSplit`)."""
    cut = holdout.cutoff.timestamp() - days * 86400.0
    h = holdout.history
    train, after = h[h["ts_s"] < cut], h[h["ts_s"] >= cut]
    after = after[after["item_idx"].isin(np.unique(train["item_idx"]))]
    by_user = after.groupby("user_idx")["item_idx"].apply(set)
    return InnerSplit(train=train, users=by_user.index.to_numpy(dtype=int), truth=list(by_user), cutoff_s=cut)


def tune(make: Callable[[Any, InnerSplit], Scorer], grid: Sequence[Any], split: InnerSplit, n_items: int,
         metric: str, block: int = 2048) -> tuple[Any, dict[str, float]]:
    """The value of ``grid`` whose scorer (built on ``split.train``) scores best on ``split`` by ``metric``.

    Returns:
        The best value (the first on ties) and each value's score (keyed by ``str(value)``).

    Raises:
        ValueError: If ``grid`` is empty.

    """
    if not grid:
        raise ValueError("tune: the grid is empty")
    k = int(metric.split("@")[1])
    scores: dict[str, float] = {}
    best, best_score = grid[0], -1.0
    for value in grid:
        top = _top_in_blocks(make(value, split), len(split.users), k, block)
        got = ranking_metrics(top, split.truth, [min(k, n_items)], n_items).get(metric, 0.0)
        scores[str(value)] = got
        if got > best_score:
            best, best_score = value, got
    return best, scores


def baseline_scorers(spark: SparkSession, holdout: Holdout, ec: EvaluateConfig, seed: int = 42,
                     tuned: dict[str, Any] | None = None) -> dict[str, Scorer]:
    """Every baseline, its settings tuned on the inner split when ``ec.tune_baselines`` (see ``tuned``).

    ``tuned``, when given, receives each tuned setting and its grid's scores.
    """
    h, n_items, n_users = holdout.history, len(holdout.items), len(holdout.train_users)
    holdout_users = holdout.users.column("user_id").to_pylist()
    users = holdout.train_users.get_indexer(holdout_users)
    cutoff = holdout.cutoff.timestamp()
    half_life, knn, reg = ec.popularity_half_life, (ec.knn_neighbours[0], ec.knn_shrinkage[0]), ec.ease_reg[0]
    if ec.tune_baselines:
        split = inner_split(holdout, ec.tune_days)
        metric = ec.promote_metric
        half_life, hl_scores = tune(lambda v, s: baselines.popularity(s.train, n_items, s.cutoff_s, v),
                                    ec.popularity_half_lives, split, n_items, metric)
        knn, knn_scores = tune(lambda v, s: baselines.item_knn(s.train, n_users, n_items, s.users, neighbours=v[0],
                                                               shrinkage=v[1]),
                               [(n, sh) for n in ec.knn_neighbours for sh in ec.knn_shrinkage], split, n_items, metric)
        reg, reg_scores = tune(lambda v, s: baselines.ease(s.train, n_users, n_items, s.users, reg=v,
                                                           max_items=ec.ease_max_items),
                               ec.ease_reg, split, n_items, metric)
        if tuned is not None:
            tuned.update({"inner_split_users": len(split.users), "metric": metric,
                          "popularity_half_life": half_life, "popularity_grid": hl_scores,
                          "item_knn": {"neighbours": knn[0], "shrinkage": knn[1]}, "item_knn_grid": knn_scores,
                          "ease_reg": reg, "ease_grid": reg_scores,
                          "ease_items": min(n_items, ec.ease_max_items)})
    return {
        "popularity": baselines.popularity(h, n_items, cutoff, half_life),
        "cooccurrence": baselines.cooccurrence(h, n_users, n_items, recent_indices(holdout)),
        "item_knn": baselines.item_knn(h, n_users, n_items, users, neighbours=knn[0], shrinkage=knn[1]),
        "ease": baselines.ease(h, n_users, n_items, users, reg=reg, max_items=ec.ease_max_items),
        "als": baselines.als(spark, h, n_items, users, rank=ec.als_rank,
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


def loss_plot(epochs: Sequence[Mapping[str, float]], path: str | Path) -> None:
    """PNG of the training loss per epoch (the object API, like :func:`recall_plot`)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(range(1, len(epochs) + 1), [e.get("loss", np.nan) for e in epochs], marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
