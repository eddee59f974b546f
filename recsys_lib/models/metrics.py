"""Ranking metrics over top-K lists with binary relevance.

For one user with relevant set R and ranked list L (first K items):

* ``recall@K = |L ∩ R| / |R|``; ``precision@K = |L ∩ R| / K``;
* ``hit_rate@K = 1`` if ``L ∩ R`` is non-empty;
* ``ndcg@K = Σ_{i∈hits} 1/log2(rank_i + 1) / Σ_{j=1..min(|R|,K)} 1/log2(j + 1)``;
* ``map@K = Σ_{i∈hits} precision@rank_i / min(|R|, K)``.

Each is averaged over users with a non-empty R. ``coverage@K`` is the share of
the catalogue that appears in anyone's top-K.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ranking_metrics(top: np.ndarray, truth: Sequence[set[int]], ks: Sequence[int], n_items: int) -> dict[str, float]:
    """Metrics for ranked item indices ``top`` (users x K_max) against relevant sets ``truth``.

    Raises:
        ValueError: If shapes disagree or a K exceeds the lists' length.

    """
    each = per_user_metrics(top, truth, ks)
    users = len(each["user"])
    out: dict[str, float] = {"users": float(users)}
    for name, values in each.items():
        if name != "user":
            out[name] = float(np.mean(values)) if users else 0.0
    if users:
        for k in ks:
            out[f"coverage@{k}"] = float(len(np.unique(top[:, :k])) / max(n_items, 1))
    return out


def per_user_metrics(top: np.ndarray, truth: Sequence[set[int]], ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Each user's metrics (those with a non-empty truth; ``"user"`` holds their row numbers in ``top``).

    Raises:
        ValueError: If shapes disagree or a K exceeds the lists' length.

    """
    if top.ndim != 2 or top.shape[0] != len(truth):
        raise ValueError(f"top has shape {top.shape}, expected ({len(truth)}, K)")
    if ks and max(ks) > top.shape[1]:
        raise ValueError(f"K={max(ks)} exceeds the {top.shape[1]} ranked items per user")
    users = [u for u, rel in enumerate(truth) if rel]
    out: dict[str, np.ndarray] = {"user": np.asarray(users, dtype=int)}
    if not users:
        return out | {f"{m}@{k}": np.zeros(0) for k in ks for m in ("recall", "precision", "hit_rate", "ndcg", "map")}
    discounts = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    hits = np.array([[item in truth[u] for item in top[u]] for u in users], dtype=bool)
    sizes = np.array([len(truth[u]) for u in users], dtype=float)
    for k in ks:
        h = hits[:, :k]
        n_hit = h.sum(axis=1)
        ideal = np.array([discounts[: min(int(s), k)].sum() for s in sizes])
        precision_at = np.cumsum(h, axis=1) / np.arange(1, k + 1)
        out[f"recall@{k}"] = n_hit / sizes
        out[f"precision@{k}"] = n_hit / k
        out[f"hit_rate@{k}"] = (n_hit > 0).astype(float)
        out[f"ndcg@{k}"] = (h * discounts[:k]).sum(axis=1) / ideal
        out[f"map@{k}"] = (precision_at * h).sum(axis=1) / np.minimum(sizes, k)
    return out


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a - b`` (paired per user) and its percentile bootstrap interval at ``level``.

    Raises:
        ValueError: If the arrays differ in length or are empty.

    """
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired_bootstrap needs two non-empty arrays of one length, got {len(a)} and {len(b)}")
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(diff.mean()), float(low), float(high)


def top_k(scores: np.ndarray, k: int, exclude: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Indices of the ``k`` highest scores per row, best first; ``exclude[u]`` items are never returned."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    if exclude is not None:
        for u, items in enumerate(exclude):
            if len(items):
                scores[u, list(items)] = -np.inf
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)
