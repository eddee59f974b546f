"""An exported serving bundle built from a lake's feature tables with an untrained (randomly initialised) model.

Serving tests and bench/serving.py need a real model (a real SavedModel query tower,
index and catalogue) over the lake's users and items, but not a good one: this
skips training, which would only slow the tests down.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from recsys_lib.core.config import RecsysConfig
from recsys_lib.core.schema import EVENT_TYPES
from recsys_lib.features.definitions import decayed_name, entities
from recsys_lib.lake import Lake


def export_untrained(lake: Lake, cfg: RecsysConfig, *, version: str = "1", seed: int = 0,
                     index: str = "brute_force") -> Path:
    """Write ``<home>/serving/current`` (as ``recsys export`` does) with a random-weight model."""
    import tensorflow as tf

    from recsys_lib.models.bundle import save_bundle
    from recsys_lib.models.data import candidate_chunk, encode
    from recsys_lib.models.index import build_index
    from recsys_lib.models.two_tower import ModelSpec, build
    from recsys_lib.serving.model import serving_dir

    tf.keras.utils.set_random_seed(seed)
    ents = entities(cfg.features)
    users = lake.read_arrow(ents["user"].table, columns=["user_id"]).column("user_id").to_pylist()
    items = lake.read_arrow(ents["item"].table, columns=["item_id", "latest_category", "latest_price", "view_count"])
    items = items.sort_by("item_id")
    cats = [c["value"] if c else "" for c in items.column("latest_category").to_pylist()]
    numeric = ["view_count", "click_count", "purchase_count",
               *[decayed_name(t, h) for t in EVENT_TYPES[:2] for h in cfg.features.half_lives]]
    spec = ModelSpec(users=sorted(set(users)), items=items.column("item_id").to_pylist(), item_categories=cats,
                     categories=sorted({c for c in cats if c}), query_numeric=[f"u_{n}" for n in numeric],
                     item_numeric=["i_view_count"], query_mean=[0.0] * len(numeric), query_std=[1.0] * len(numeric),
                     item_mean=[0.0], item_std=[1.0], recent_len=cfg.features.recent_items,
                     top_categories=cfg.features.affinity_top_k, embedding_dim=16, tower_layers=[32])
    model = build(spec)
    prices = pc.struct_field(items.column("latest_price"), "value")
    table = items.select(["item_id"]).append_column("category_id", pc.struct_field(
        items.column("latest_category"), "value")).append_column("price", prices).append_column(
        "i_view_count", items.column("view_count"))
    embeddings = encode(model.candidate, candidate_chunk(table, spec))
    popular = [str(i) for i in table.sort_by([("i_view_count", "descending")]).column("item_id").to_pylist()[:200]]
    target = serving_dir(cfg)
    staging = target.with_name(f"staging-{version}")
    shutil.rmtree(staging, ignore_errors=True)
    meta = {"model_version": version, "popular": popular, "exported_at": datetime.now(UTC).isoformat(),
            "items": len(embeddings)}
    save_bundle(staging, model, table.to_pandas(),
                np.asarray(embeddings), build_index(np.asarray(embeddings), index), meta)
    (staging / "meta.json").write_text(json.dumps(json.loads((staging / "meta.json").read_text()) | meta))
    if target.exists():
        old = target.with_name("replaced")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    staging.rename(target)
    return target
