"""A tiny model spec and input rows for TensorFlow tests."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recsys_lib.models.two_tower import ModelSpec

USERS = [f"u{i}" for i in range(6)]
ITEMS = [f"i{i}" for i in range(8)]


def tiny_spec(**changes: object) -> ModelSpec:
    """Six users, eight items in two categories, one numeric feature per side."""
    base = dict(users=USERS, items=ITEMS, item_categories=[f"c{i % 2}" for i in range(8)], categories=["c0", "c1"],
                query_numeric=["u_view_count"], item_numeric=["i_view_count"], query_mean=[0.0], query_std=[1.0],
                item_mean=[0.0], item_std=[1.0], recent_len=3, top_categories=2, embedding_dim=4, tower_layers=[8])
    return ModelSpec(**(base | changes))  # type: ignore[arg-type]


def rows(n: int, seed: int = 0) -> pa.Table:
    """``n`` training rows shaped like ``training_examples``."""
    rng = np.random.default_rng(seed)
    items = rng.choice(ITEMS, n)
    return pa.table({
        "event_id": [f"e{i}" for i in range(n)],
        "user_id": rng.choice(USERS, n),
        "item_id": items,
        "category_id": [f"c{int(i[1:]) % 2}" for i in items],
        "price": pa.array([None if i % 5 == 0 else float(i) for i in range(n)], pa.float64()),
        "label_type": rng.choice(["click", "purchase", "view"], n),
        "u_view_count": rng.integers(0, 10, n),
        "i_view_count": rng.integers(0, 10, n),
        "u_recent_items": [list(rng.choice(ITEMS, rng.integers(0, 5))) for _ in range(n)],
        "u_top_categories": [[{"category_id": "c0", "weight": 2.0}, {"category_id": "c1", "weight": 0.5}]
                             if i % 2 else None for i in range(n)],
    })
