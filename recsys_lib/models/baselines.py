"""Baselines the two-tower model must beat, scored on the same holdout.

Every scorer maps a block of holdout users to a (users x catalogue) score matrix,
so all models are ranked, filtered and measured by the same code.

* ``popularity``: Σ 2^-((cutoff - ts) / H) over each item's labelled interactions
  before the cutoff; the same list for everyone.
* ``cooccurrence``: item-to-item cosine co-occurrence over users' histories; a
  user's score is the sum of the rows of their recent items.
* ``als``: Spark MLlib ALS with implicit feedback on interaction counts.
* ``item_knn``: item-based k-nearest neighbours over users' whole histories: cosine
  similarity with shrinkage, c_ij / (sqrt(n_i n_j) + shrinkage), each item keeping its
  ``neighbours`` most similar items.
* ``ease``: EASE (Steck 2019), the closed-form linear item-item autoencoder:
  P = (XᵀX + λI)⁻¹, B = I - P diag(1/diag(P)), scores X_u B. Dense in the catalogue, so
  above ``max_items`` it keeps the most interacted items and ranks the rest last.

Users without history get zero from the neighbourhood models; ties fall back to popularity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

#: A scorer: holdout-user row indices -> scores over the catalogue.
Scorer = Callable[[np.ndarray], np.ndarray]


def popularity(history: pd.DataFrame, n_items: int, cutoff_s: float, half_life_s: float) -> Scorer:
    """Recency-decayed popularity. ``history`` has ``item_idx`` and ``ts_s`` (seconds) columns."""
    weights = np.power(2.0, -(cutoff_s - history["ts_s"].to_numpy(dtype=float)) / half_life_s)
    scores = np.bincount(history["item_idx"].to_numpy(), weights=weights, minlength=n_items)

    def score(users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(scores, (len(users), n_items))

    return score


def cooccurrence(history: pd.DataFrame, n_users: int, n_items: int, recent: Sequence[np.ndarray]) -> Scorer:
    """Cosine item co-occurrence; ``history`` has ``user_idx`` and ``item_idx``; ``recent[u]`` are u's items."""
    pairs = history[["user_idx", "item_idx"]].drop_duplicates()
    x = sparse.csr_matrix((np.ones(len(pairs)), (pairs["user_idx"], pairs["item_idx"])), shape=(n_users, n_items))
    counts = np.asarray(x.sum(axis=0)).ravel()
    co = (x.T @ x).tocsr().astype(float)
    co.setdiag(0.0)
    norm = 1.0 / np.sqrt(np.maximum(counts, 1.0))
    co = sparse.diags(norm) @ co @ sparse.diags(norm)
    rows = sparse.csr_matrix((np.ones(sum(len(r) for r in recent)),
                              (np.repeat(np.arange(len(recent)), [len(r) for r in recent]),
                               np.concatenate([np.asarray(r, dtype=int) for r in recent]) if recent else [])),
                             shape=(len(recent), n_items))
    tiny = 1e-9 * counts / max(counts.max(), 1.0)  # ties (users without history) fall back to popularity

    def score(users: np.ndarray) -> np.ndarray:
        return np.asarray((rows[users] @ co).todense()) + tiny

    return score


def als(spark: SparkSession, history: pd.DataFrame, n_items: int, holdout_user_idx: np.ndarray, *,
        rank: int, iterations: int, reg: float, alpha: float, seed: int = 42) -> Scorer:
    """Implicit ALS on interaction counts; users unseen in training score by item-factor norm (popularity-like)."""
    from pyspark.ml.recommendation import ALS

    counts = history.groupby(["user_idx", "item_idx"]).size().rename("n").reset_index()
    df = spark.createDataFrame(counts.astype({"user_idx": "int32", "item_idx": "int32", "n": "float32"}))
    model = ALS(rank=rank, maxIter=iterations, regParam=reg, alpha=alpha, implicitPrefs=True, userCol="user_idx",
                itemCol="item_idx", ratingCol="n", seed=seed, coldStartStrategy="drop").fit(df)
    item_f = np.zeros((n_items, rank))
    items = pd.DataFrame(model.itemFactors.toPandas())
    item_f[items["id"].to_numpy()] = np.stack(items["features"].to_numpy())
    users = pd.DataFrame(model.userFactors.toPandas())
    user_f = dict(zip(users["id"].to_numpy(), users["features"].to_numpy(), strict=True))
    fallback = item_f.mean(axis=0)
    q = np.stack([np.asarray(user_f.get(int(u), fallback)) for u in holdout_user_idx]) if len(holdout_user_idx) \
        else np.zeros((0, rank))

    def score(users: np.ndarray) -> np.ndarray:
        return q[users] @ item_f.T

    return score


def interactions(history: pd.DataFrame, n_users: int, n_items: int) -> sparse.csr_matrix:
    """Binary users x items matrix of ``history`` (``user_idx``, ``item_idx``)."""
    pairs = history[["user_idx", "item_idx"]].drop_duplicates()
    return sparse.csr_matrix((np.ones(len(pairs)), (pairs["user_idx"], pairs["item_idx"])), shape=(n_users, n_items))


def _rows_of(x: sparse.csr_matrix, user_idx: np.ndarray) -> sparse.csr_matrix:
    """Rows of ``x`` for ``user_idx``; an index of -1 (a user without history) is an empty row."""
    known = np.asarray(user_idx) >= 0
    pick = sparse.csr_matrix((np.ones(int(known.sum())), (np.flatnonzero(known), np.asarray(user_idx)[known])),
                             shape=(len(user_idx), x.shape[0]))
    return (pick @ x).tocsr()


def _tie_break(x: sparse.csr_matrix) -> np.ndarray:
    counts = np.asarray(x.sum(axis=0)).ravel()
    return 1e-9 * counts / max(float(counts.max()) if counts.size else 0.0, 1.0)


def item_knn(history: pd.DataFrame, n_users: int, n_items: int, holdout_user_idx: np.ndarray, *,
             neighbours: int = 100, shrinkage: float = 10.0) -> Scorer:
    """Item-kNN with shrunk cosine similarity (see the module docstring)."""
    x = interactions(history, n_users, n_items)
    counts = np.asarray(x.sum(axis=0)).ravel()
    co = (x.T @ x).tocoo()
    keep = co.row != co.col
    rows, cols = co.row[keep], co.col[keep]
    sim = co.data[keep] / (np.sqrt(counts[rows] * counts[cols]) + shrinkage)
    # each item j keeps its `neighbours` most similar items i: sort by (j, -sim), take the first per j
    order = np.lexsort((-sim, cols))
    rows, cols, sim = rows[order], cols[order], sim[order]
    starts = np.searchsorted(cols, np.arange(n_items))
    rank = np.arange(len(cols)) - starts[cols]
    top = rank < neighbours
    s = sparse.csr_matrix((sim[top], (rows[top], cols[top])), shape=(n_items, n_items))
    users = _rows_of(x, holdout_user_idx)
    tiny = _tie_break(x)

    def score(block: np.ndarray) -> np.ndarray:
        return np.asarray((users[block] @ s).todense()) + tiny

    return score


def ease(history: pd.DataFrame, n_users: int, n_items: int, holdout_user_idx: np.ndarray, *,
         reg: float = 500.0, max_items: int = 20_000) -> Scorer:
    """EASE with L2 weight ``reg`` over at most ``max_items`` items (see the module docstring)."""
    x = interactions(history, n_users, n_items)
    counts = np.asarray(x.sum(axis=0)).ravel()
    kept = np.sort(np.argsort(-counts, kind="stable")[:max_items]) if n_items > max_items else np.arange(n_items)
    xs = x[:, kept]
    gram = np.asarray((xs.T @ xs).todense(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += reg
    p = np.linalg.inv(gram)
    b = p / (-np.diag(p))
    b[np.diag_indices_from(b)] = 0.0
    users = _rows_of(xs.tocsr(), holdout_user_idx)
    tiny = _tie_break(x)

    def score(block: np.ndarray) -> np.ndarray:
        out = np.full((len(block), n_items), -1e9) + tiny  # items outside the kept set rank last
        out[:, kept] = np.asarray(users[block] @ b) + tiny[kept]
        return out

    return score
