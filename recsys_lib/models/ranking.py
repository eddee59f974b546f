"""The ranking stage: a DCN-v2 model that re-scores the retrieval's top candidates.

Retrieval ranks the whole catalogue with one inner product per item, so its score cannot
combine the query's and the item's features beyond that product. The ranker sees each
(query, candidate) pair's full feature vector (:func:`pair_features`): both towers'
embeddings, their element-wise product, the retrieval score, and the normalised numeric
features of both sides. A DCN-v2 stack (``tfrs.layers.dcn.Cross`` layers, then a deep
stack) learns their crosses explicitly and predicts whether the user engages with the item.

Training pairs (:func:`training_pairs`): each training label is a positive; its negatives
are drawn from the retrieval's own top candidates for that query (hard negatives: exactly
the items the ranker will have to tell apart), never the positive itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

import recsys_lib.models  # noqa: F401 - sets TF_USE_LEGACY_KERAS before TensorFlow loads


@dataclass
class RankerSpec:
    """The ranker's input width and layer sizes."""

    inputs: int
    cross_layers: int = 2
    deep_layers: list[int] = field(default_factory=lambda: [64, 32])

    def save(self, path: Path) -> None:
        """Write as JSON."""
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> RankerSpec:
        """Read JSON written by :meth:`save`."""
        return cls(**json.loads(path.read_text()))


def pair_features(queries: np.ndarray, items: np.ndarray, q_numeric: np.ndarray,
                  i_numeric: np.ndarray) -> np.ndarray:
    """One row per (query, candidate) pair: ``[q, c, q*c, q·c, query numerics, candidate numerics]``.

    All arguments are row-aligned (row i of each describes pair i).
    """
    product = queries * items
    return np.concatenate([queries, items, product, product.sum(axis=1, keepdims=True), q_numeric, i_numeric],
                          axis=1).astype(np.float32)


def width(dim: int, q_numeric: int, i_numeric: int) -> int:
    """The width of :func:`pair_features` rows for ``dim``-wide embeddings (both towers output the same width)."""
    return 3 * dim + 1 + q_numeric + i_numeric


class Ranker(tfrs.Model):
    """DCN-v2: cross layers over the pair features, a deep stack, one logit."""

    def __init__(self, spec: RankerSpec) -> None:
        super().__init__()
        self.spec = spec
        self.norm = tf.keras.layers.LayerNormalization(name="input_norm")
        self.crosses = [tfrs.layers.dcn.Cross(name=f"cross_{i}") for i in range(spec.cross_layers)]
        self.deep = [tf.keras.layers.Dense(u, activation="relu", name=f"deep_{i}")
                     for i, u in enumerate(spec.deep_layers)]
        self.out = tf.keras.layers.Dense(1, name="logit")
        self.task = tfrs.tasks.Ranking(loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
                                       metrics=[tf.keras.metrics.AUC(from_logits=True, name="auc")])

    def call(self, x: tf.Tensor) -> tf.Tensor:
        """Logits for rows of :func:`pair_features`."""
        x0 = self.norm(x)
        h = x0
        for cross in self.crosses:
            h = cross(x0, h)
        for dense in self.deep:
            h = dense(h)
        return self.out(h)

    def compute_loss(self, inputs: tuple[tf.Tensor, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Binary cross-entropy of (features, labels) batches."""
        features, labels = inputs
        return self.task(labels=labels, predictions=self(features))


def build_ranker(spec: RankerSpec) -> Ranker:
    """A ranker with every variable created."""
    model = Ranker(spec)
    model(tf.zeros([1, spec.inputs]))
    return model


def training_pairs(queries: np.ndarray, positives: np.ndarray, item_embeddings: np.ndarray, *, negatives: int,
                   candidates: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query row, item index, label) triples: each positive, then ``negatives`` hard negatives per query.

    Negatives are drawn without replacement from the retrieval's top ``candidates`` items for the
    query (by inner product), the positive excluded.
    """
    rng = np.random.default_rng(seed)
    rows = [np.arange(len(positives))]
    items, labels = [positives.astype(np.int64)], [np.ones(len(positives), np.float32)]
    k = min(candidates, item_embeddings.shape[0])
    for start in range(0, len(queries), 2048):
        block = slice(start, min(start + 2048, len(queries)))
        scores = queries[block] @ item_embeddings.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else \
            np.tile(np.arange(scores.shape[1]), (scores.shape[0], 1))
        for offset, (cands, positive) in enumerate(zip(top, positives[block], strict=True)):
            pool = cands[cands != positive]
            if len(pool) == 0:
                continue
            chosen = rng.choice(pool, size=min(negatives, len(pool)), replace=False)
            rows.append(np.full(len(chosen), start + offset))
            items.append(chosen)
            labels.append(np.zeros(len(chosen), np.float32))
    return np.concatenate(rows), np.concatenate(items), np.concatenate(labels)


def fit_ranker(features: np.ndarray, labels: np.ndarray, spec: RankerSpec, *, epochs: int, batch_size: int,
               learning_rate: float, seed: int) -> tuple[Ranker, list[dict[str, float]]]:
    """Train a ranker on pair features; returns it and each epoch's loss and AUC."""
    tf.keras.utils.set_random_seed(seed)
    model = build_ranker(spec)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=learning_rate))
    data = tf.data.Dataset.from_tensor_slices((features, labels[:, None])).shuffle(
        min(len(labels), 200_000), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    history = model.fit(data, epochs=epochs, verbose=0)
    keys = list(history.history)
    return model, [{k: float(history.history[k][e]) for k in keys} for e in range(epochs)]


def scores(model: Ranker, features: np.ndarray, batch: int = 65536) -> np.ndarray:
    """The ranker's logits for rows of pair features."""
    parts = [model(tf.constant(features[s:s + batch])).numpy()[:, 0] for s in range(0, len(features), batch)]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def rank_logits(model: Ranker, top: np.ndarray, queries: np.ndarray, q_numeric: np.ndarray,
                item_embeddings: np.ndarray, i_numeric: np.ndarray) -> np.ndarray:
    """The ranker's logit for each of ``top``'s candidates (rows: queries; item indices, all valid)."""
    users = np.repeat(np.arange(top.shape[0]), top.shape[1])
    flat = top.reshape(-1)
    return scores(model, pair_features(queries[users], item_embeddings[flat], q_numeric[users],
                                       i_numeric[flat])).reshape(top.shape).astype(np.float64)


def rerank(model: Ranker, top: np.ndarray, queries: np.ndarray, q_numeric: np.ndarray, item_embeddings: np.ndarray,
           i_numeric: np.ndarray, exclude: list[list[int]] | None = None) -> np.ndarray:
    """Each row of ``top`` (retrieval's candidates, item indices) reordered by the ranker's score.

    ``exclude[u]`` items (e.g. already bought) go last whatever their score, as retrieval put them.
    """
    logits = rank_logits(model, top, queries, q_numeric, item_embeddings, i_numeric)
    if exclude is not None:
        for u, items in enumerate(exclude):
            if len(items):
                logits[u, np.isin(top[u], items)] = -np.inf
    order = np.argsort(-logits, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def save_ranker(model: Ranker, folder: Path) -> None:
    """Spec and weights under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model.spec.save(folder / "spec.json")
    # by position: the same spec builds the same variables in the same order (their names need not be unique)
    np.savez(str(folder / "weights.npz"), *[v.numpy() for v in model.variables])


def load_ranker(folder: Path) -> Ranker:
    """A ranker saved by :func:`save_ranker`.

    Raises:
        ValueError: If a saved variable is missing or has another shape.

    """
    model = build_ranker(RankerSpec.load(folder / "spec.json"))
    with np.load(folder / "weights.npz") as saved:
        arrays = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    if len(arrays) != len(model.variables):
        raise ValueError(f"{folder} holds {len(arrays)} arrays; the ranker has {len(model.variables)} variables")
    for var, value in zip(model.variables, arrays, strict=True):
        if value.shape != tuple(var.shape):
            raise ValueError(f"ranker weights in {folder} do not fit variable {var.name} {tuple(var.shape)}")
        var.assign(value)
    return model
