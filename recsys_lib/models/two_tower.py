"""The TFRS two-tower retrieval model.

Query tower: user id embedding (OOV buckets hash unseen users), normalised
point-in-time user counts and decays, the user's recent items pooled through the
item embedding shared with the candidate tower, and category affinity: the
categories of those recent items pooled through the shared category embedding.

Candidate tower: item id embedding (OOV buckets), category embedding, price
bucket embedding (a separate bucket for "no price"), normalised popularity
counts and decays.

Both end in a dense stack and L2 normalisation. The retrieval task is an in-batch
softmax with temperature, logQ sampling-bias correction from each label item's
training frequency (``item_prob``) and removal of accidental hits.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

import recsys_lib.models  # noqa: F401 - sets TF_USE_LEGACY_KERAS before TensorFlow loads

PAD = ""
#: Name of the per-user embedding layer (its variables are ``user_embedding/...``).
USER_EMBEDDING = "user_embedding"
#: Query tower inputs, in the exported signature's order.
QUERY_INPUTS = ("user_id", "u_numeric", "recent_items", "top_categories", "top_category_weights")


@dataclass
class ModelSpec:
    """Everything needed to rebuild the model: vocabularies, feature names and normalisation, sizes."""

    users: list[str]
    items: list[str]
    item_categories: list[str]
    categories: list[str]
    query_numeric: list[str]
    item_numeric: list[str]
    query_mean: list[float]
    query_std: list[float]
    item_mean: list[float]
    item_std: list[float]
    recent_len: int = 20
    top_categories: int = 5
    embedding_dim: int = 32
    tower_layers: list[int] = field(default_factory=lambda: [64])
    oov_buckets: int = 8
    price_buckets: list[float] = field(default_factory=lambda: [5.0, 10.0, 20.0, 40.0, 80.0, 160.0])
    temperature: float = 0.1
    #: False: every user shares the OOV buckets (the id embedding overfits on small data).
    user_id_embedding: bool = True
    #: Add a learned per-item bias (from the candidate features) to every score: the query gets a
    #: constant 1 appended and the candidate its bias, so scores stay inner products (ANN-searchable).
    item_bias: bool = True
    #: Add an explicit affinity match: log(share of the user's affinity in the item's category + smoothing),
    #: with a learned scale. Separable: the query carries the log-shares, the candidate a category one-hot.
    affinity_match: bool = True
    affinity_smoothing: float = 0.05

    def save(self, path: Path) -> None:
        """Write as JSON."""
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> ModelSpec:
        """Read JSON written by :meth:`save`."""
        return cls(**json.loads(path.read_text()))

    def grown(self, users: list[str], items: list[str], item_categories: dict[str, str],
              categories: list[str]) -> ModelSpec:
        """Return a copy with new ids appended after the old ones (old ids keep their embedding rows)."""
        known_items = set(self.items)
        new_items = sorted(set(items) - known_items)
        cats = dict(zip(self.items, self.item_categories, strict=True)) | item_categories
        all_items = self.items + new_items
        return ModelSpec(**{**asdict(self),
                            "users": self.users + sorted(set(users) - set(self.users)),
                            "items": all_items,
                            "item_categories": [cats.get(i, PAD) for i in all_items],
                            "categories": self.categories + sorted(set(categories) - set(self.categories))})


def _lookup(vocab: list[str], oov: int, name: str) -> tf.keras.layers.StringLookup:
    return tf.keras.layers.StringLookup(vocabulary=vocab or ["<none>"], num_oov_indices=oov, mask_token=None,
                                        name=name)


def _stack(layers: list[int], dim: int, name: str) -> tf.keras.Sequential:
    dense = [tf.keras.layers.Dense(u, activation="relu", name=f"{name}_{i}") for i, u in enumerate(layers)]
    return tf.keras.Sequential([*dense, tf.keras.layers.Dense(dim, name=f"{name}_out")], name=name)


class TwoTower(tfrs.Model):
    """Two towers sharing the item and category embeddings, trained with a TFRS retrieval task."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        d, oov = spec.embedding_dim, spec.oov_buckets
        self.user_lookup = _lookup(spec.users, oov, "user_lookup")
        self.item_lookup = _lookup(spec.items, oov, "item_lookup")
        self.category_lookup = _lookup(spec.categories, 1, "category_lookup")
        self.user_embedding = tf.keras.layers.Embedding(len(spec.users) + oov + 1, d, name=USER_EMBEDDING)
        self.item_embedding = tf.keras.layers.Embedding(len(spec.items) + oov + 1, d, name="item_embedding")
        self.category_embedding = tf.keras.layers.Embedding(len(spec.categories) + 2, d, name="category_embedding")
        self.price_embedding = tf.keras.layers.Embedding(len(spec.price_buckets) + 2, 8, name="price_embedding")
        self.item_to_category = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(spec.items or ["<none>"], tf.string),
                                                tf.constant(spec.item_categories or [PAD], tf.string)),
            default_value=PAD)
        self.query_dense = _stack(spec.tower_layers, d, "query_dense")
        self.candidate_dense = _stack(spec.tower_layers, d, "candidate_dense")
        self.item_bias_dense = _stack(spec.tower_layers, 1, "item_bias")
        self.q_mean, self.q_std = _stats(spec.query_mean, spec.query_std)
        self.i_mean, self.i_std = _stats(spec.item_mean, spec.item_std)
        self.affinity_scale = self.add_weight(name="affinity_scale", shape=(), trainable=True,
                                              initializer=tf.keras.initializers.Constant(spec.temperature))
        self.task = tfrs.tasks.Retrieval(temperature=spec.temperature, remove_accidental_hits=True)

    # -- lookups: string inputs -> integer indices (no trainable weights) -------------------
    def query_ids(self, f: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The query inputs (:data:`QUERY_INPUTS`) with every id replaced by its embedding row (-1: padding)."""
        recent = f["recent_items"]
        padding = tf.equal(recent, PAD)
        return {"user_idx": self.user_lookup(f["user_id"]),
                "recent_idx": tf.where(padding, tf.constant(-1, tf.int64), self.item_lookup(recent)),
                "recent_category_idx": self.category_lookup(self.item_to_category.lookup(recent)),
                "top_category_idx": self.category_lookup(f["top_categories"]),
                "top_category_weights": f["top_category_weights"], "u_numeric": f["u_numeric"]}

    def candidate_ids(self, f: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The candidate inputs with item and category ids replaced by their embedding rows."""
        return {"item_idx": self.item_lookup(f["item_id"]), "category_idx": self.category_lookup(f["category_id"]),
                "price": f["price"], "i_numeric": f["i_numeric"]}

    def featurize(self, f: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """A training batch's lookups, done once in the input pipeline so the train step is numeric only."""
        return {**self.query_ids(f), **self.candidate_ids(f), "item_prob": f["item_prob"]}

    # -- towers ---------------------------------------------------------------------------
    def query(self, f: dict[str, tf.Tensor]) -> tf.Tensor:
        """Query embeddings from :data:`QUERY_INPUTS` (raw numerics; lists padded with "")."""
        return self.query_tower(self.query_ids(f))

    def candidate(self, f: dict[str, tf.Tensor]) -> tf.Tensor:
        """Candidate embeddings from ``item_id``, ``category_id``, ``price`` (< 0: none) and raw ``i_numeric``."""
        return self.candidate_tower(self.candidate_ids(f))

    def query_tower(self, x: dict[str, tf.Tensor]) -> tf.Tensor:
        """Query embeddings from :meth:`query_ids` output."""
        recent = x["recent_idx"]
        mask = tf.cast(recent >= 0, tf.float32)[..., None]
        count = tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
        pooled_items = tf.reduce_sum(self.item_embedding(tf.maximum(recent, 0)) * mask, axis=1) / count
        pooled_cats = tf.reduce_sum(self.category_embedding(x["recent_category_idx"]) * mask, axis=1) / count
        weights = x["top_category_weights"][..., None]
        total = tf.maximum(tf.reduce_sum(weights, axis=1), 1e-6)
        affinity = tf.reduce_sum(self.category_embedding(x["top_category_idx"]) * weights, axis=1) / total
        numeric = _normalise(x["u_numeric"], self.q_mean, self.q_std)
        user = self.user_embedding(x["user_idx"])
        if not self.spec.user_id_embedding:
            user = tf.zeros_like(user)
        h = tf.concat([user, numeric, pooled_items, pooled_cats, affinity], axis=1)
        out = tf.math.l2_normalize(tf.cast(self.query_dense(h), tf.float32), axis=1)
        parts = [out]
        if self.spec.item_bias:
            parts.append(tf.ones_like(out[:, :1]))
        if self.spec.affinity_match:
            shares = tf.reduce_sum(tf.one_hot(x["top_category_idx"], self._n_category_slots) * weights,
                                   axis=1) / total
            parts.append(self.affinity_scale * tf.math.log(shares + self.spec.affinity_smoothing))
        return tf.concat(parts, axis=1)

    def candidate_tower(self, x: dict[str, tf.Tensor]) -> tf.Tensor:
        """Candidate embeddings from :meth:`candidate_ids` output."""
        bounds = self.spec.price_buckets
        bucket = tf.where(x["price"] < 0, len(bounds) + 1,
                          tf.raw_ops.Bucketize(input=x["price"], boundaries=[float(b) for b in bounds]))
        numeric = _normalise(x["i_numeric"], self.i_mean, self.i_std)
        h = tf.concat([self.item_embedding(x["item_idx"]), self.category_embedding(x["category_idx"]),
                       self.price_embedding(bucket), numeric], axis=1)
        out = tf.math.l2_normalize(tf.cast(self.candidate_dense(h), tf.float32), axis=1)
        parts = [out]
        if self.spec.item_bias:
            # the bias sees only the popularity features: an id embedding would memorise the training window's
            # average popularity instead of learning how current counts predict the coming interactions
            parts.append(tf.cast(self.item_bias_dense(numeric), tf.float32))
        if self.spec.affinity_match:
            parts.append(tf.one_hot(x["category_idx"], self._n_category_slots))
        return tf.concat(parts, axis=1)

    @property
    def _n_category_slots(self) -> int:
        return len(self.spec.categories or ["<none>"]) + 1

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """In-batch softmax loss of a batch of :meth:`featurize` output (raw inputs are featurized first)."""
        if "item_idx" not in features:
            features = self.featurize(features)
        return self.task(self.query_tower(features), self.candidate_tower(features),
                         candidate_sampling_probability=features["item_prob"],
                         candidate_ids=features["item_idx"], compute_metrics=False)


def _stats(mean: list[float], std: list[float]) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.constant(mean or [0.0], tf.float32), tf.constant([max(s, 1e-6) for s in std] or [1.0], tf.float32)


def _normalise(raw: tf.Tensor, mean: tf.Tensor, std: tf.Tensor) -> tf.Tensor:
    """``(log1p(max(x, 0)) - mean) / std``; mean and std are of the log1p values over the training rows."""
    if raw.shape[-1] == 0:
        return tf.zeros([tf.shape(raw)[0], 0], tf.float32)
    return (tf.math.log1p(tf.maximum(tf.cast(raw, tf.float32), 0.0)) - mean) / std


def normalise_numeric(raw: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """The towers' numeric normalisation (:func:`_normalise` with :func:`_stats`) on a NumPy array of rows."""
    return _normalise(tf.constant(raw, tf.float32), *_stats(mean, std)).numpy()


def input_signature(spec: ModelSpec, side: str) -> dict[str, tf.TensorSpec]:
    """The feature tensors one side of the model reads (batch dimension first)."""
    if side == "query":
        return {"user_id": tf.TensorSpec([None], tf.string),
                "u_numeric": tf.TensorSpec([None, len(spec.query_numeric)], tf.float32),
                "recent_items": tf.TensorSpec([None, spec.recent_len], tf.string),
                "top_categories": tf.TensorSpec([None, spec.top_categories], tf.string),
                "top_category_weights": tf.TensorSpec([None, spec.top_categories], tf.float32)}
    return {"item_id": tf.TensorSpec([None], tf.string), "category_id": tf.TensorSpec([None], tf.string),
            "price": tf.TensorSpec([None], tf.float32),
            "i_numeric": tf.TensorSpec([None, len(spec.item_numeric)], tf.float32)}


def build(spec: ModelSpec) -> TwoTower:
    """A model with every variable created (one dummy forward pass)."""
    model = TwoTower(spec)
    dummy = {k: tf.zeros([1, *s.shape[1:]], s.dtype) if s.dtype != tf.string else tf.fill([1, *s.shape[1:]], PAD)
             for k, s in {**input_signature(spec, "query"), **input_signature(spec, "candidate")}.items()}
    model.query(dummy)
    model.candidate(dummy)
    return model


def weight_arrays(model: TwoTower) -> dict[str, np.ndarray]:
    """Every trainable variable by name."""
    return {v.name: v.numpy() for v in model.trainable_variables}


def load_weights(model: TwoTower, arrays: dict[str, Any]) -> list[str]:
    """Assign saved arrays by variable name; a saved embedding smaller than the model's fills its first rows.

    Returns:
        Names of the model's variables that had no saved value (left as initialised).

    Raises:
        ValueError: If a saved array cannot fit its variable.

    """
    missing = []
    for var in model.trainable_variables:
        if var.name not in arrays:
            missing.append(var.name)
            continue
        saved = np.asarray(arrays[var.name])
        if saved.shape == tuple(var.shape):
            var.assign(saved)
        elif saved.ndim == 2 and saved.shape[1] == var.shape[1] and saved.shape[0] <= var.shape[0]:
            value = var.numpy()
            value[: saved.shape[0]] = saved
            var.assign(value)
        else:
            raise ValueError(f"saved weights for {var.name} have shape {saved.shape}; the model needs {var.shape}")
    return missing


class QueryServer(tf.Module):
    """The exported query tower: raw user features in, normalised query embeddings out."""

    def __init__(self, model: TwoTower) -> None:
        super().__init__()
        self.model = model
        sig = input_signature(model.spec, "query")

        @tf.function(input_signature=[sig[k] for k in QUERY_INPUTS])
        def serve(user_id: tf.Tensor, u_numeric: tf.Tensor, recent_items: tf.Tensor, top_categories: tf.Tensor,
                  top_category_weights: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"embedding": model.query({"user_id": user_id, "u_numeric": u_numeric,
                                              "recent_items": recent_items, "top_categories": top_categories,
                                              "top_category_weights": top_category_weights})}

        self.serve = serve


def export_query_tower(model: TwoTower, folder: Path) -> None:
    """Save the query tower as a SavedModel with a ``serve`` signature."""
    server = QueryServer(model)
    tf.saved_model.save(server, str(folder), signatures={"serving_default": server.serve})
