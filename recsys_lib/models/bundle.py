"""A trained model's files: everything serving, evaluation and warm start need.

Layout of a bundle folder:

* ``spec.json``: vocabularies, feature names, normalisation and sizes;
* ``weights.npz``: every trainable variable by name (warm start and reloads);
* ``query_tower/``: the query tower as a SavedModel (``serving_default``);
* ``items.parquet``: the catalogue at export (id, category, price, the numeric inputs) and each item's embedding;
* ``index/``: the ANN index over those embeddings;
* ``meta.json``: cutoff, input table versions, metrics, index kind and its recall;
* ``ranker/`` (with ``ranking.enabled``): the DCN-v2 ranking stage, and its report in ``meta.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys_lib.models.data import candidate_chunk, encode, query_chunk
from recsys_lib.models.index import Index, load_index
from recsys_lib.models.two_tower import ModelSpec, TwoTower, build, export_query_tower, load_weights, weight_arrays


def save_bundle(folder: Path, model: TwoTower, items: pd.DataFrame, item_embeddings: np.ndarray, index: Index,
                meta: dict[str, Any]) -> Path:
    """Write a bundle (see the module docstring) and return its folder."""
    folder.mkdir(parents=True, exist_ok=True)
    model.spec.save(folder / "spec.json")
    np.savez(str(folder / "weights.npz"), **weight_arrays(model))  # type: ignore[arg-type]
    export_query_tower(model, folder / "query_tower")
    # the items' numeric inputs go too: a served ranker reads them (recsys_lib.serving.model)
    numerics = [c for c in model.spec.item_numeric if c in items.columns]
    table = items[["item_id", "category_id", "price", *numerics]].assign(
        embedding=list(item_embeddings.astype(np.float32)))
    table.to_parquet(folder / "items.parquet", index=False)
    index.save(folder / "index")
    (folder / "meta.json").write_text(json.dumps(meta | {"index": index.kind}, indent=2, default=str))
    return folder


@dataclass
class Bundle:
    """A bundle folder, loaded lazily."""

    path: Path

    @cached_property
    def spec(self) -> ModelSpec:
        """The model's spec."""
        return ModelSpec.load(self.path / "spec.json")

    @cached_property
    def meta(self) -> dict[str, Any]:
        """Training metadata."""
        return dict(json.loads((self.path / "meta.json").read_text()))

    @cached_property
    def weights(self) -> dict[str, np.ndarray]:
        """Saved variables by name."""
        with np.load(self.path / "weights.npz") as saved:
            return {k: saved[k] for k in saved.files}

    @cached_property
    def model(self) -> TwoTower:
        """The full model rebuilt from spec and weights."""
        model = build(self.spec)
        load_weights(model, self.weights)
        return model

    @cached_property
    def items(self) -> pd.DataFrame:
        """Catalogue at export with embeddings."""
        return pd.read_parquet(self.path / "items.parquet")

    @cached_property
    def index(self) -> Index:
        """The ANN index over :attr:`items`' embeddings."""
        return load_index(self.path / "index")

    @cached_property
    def query_tower(self) -> Any:
        """The exported SavedModel's serving signature."""
        import tensorflow as tf

        return tf.saved_model.load(str(self.path / "query_tower")).signatures["serving_default"]

    def encode_queries(self, users: pa.Table) -> np.ndarray:
        """Query embeddings through the exported SavedModel, for rows as ``query_chunk`` reads them."""
        import tensorflow as tf

        chunk = query_chunk(users, self.spec)
        return encode(lambda f: self.query_tower(**{k: tf.convert_to_tensor(v) for k, v in f.items()})["embedding"],
                      chunk)

    def encode_items(self, items: pa.Table) -> np.ndarray:
        """Candidate embeddings for rows with ``item_id``, ``category_id``, ``price``, ``i_*``."""
        return encode(self.model.candidate, candidate_chunk(items, self.spec))
