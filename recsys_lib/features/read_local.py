"""The driver-local twin of :mod:`recsys_lib.features.read`: read-time features of one state row.

Serving finalises the few rows a request needs in Python instead of Spark, with
the same formulas column by column; ``tests/spark/test_online_projection.py``
checks the two against each other.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import datasketches as ds

from recsys_lib.core.config import FeaturesConfig
from recsys_lib.features.definitions import ITEM, USER, Entity, decayed_columns

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _seconds(ts: datetime) -> float:
    """As :func:`recsys_lib.features.definitions.seconds`: epoch microseconds / 1e6."""
    aware = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return ((aware - _EPOCH) // _MICRO) / 1_000_000.0


_MICRO = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH


def finalise_state(state: dict[str, Any], entity: Entity, fc: FeaturesConfig, at: datetime) -> dict[str, Any]:
    """``state`` (a stored row as ``to_pylist`` gives it) with the read-time features at ``at`` added."""
    out = dict(state)
    t_s = _seconds(at)
    age = t_s - _seconds(state["as_of"])
    out["features_at"] = at
    for name, h in decayed_columns(fc).items():
        value = state.get(name)
        out[name] = None if value is None else value * 2.0 ** (-age / h)
    out["ctr"] = _smoothed(state, "click_count", "view_count", fc.ctr_prior_mean, fc.ctr_prior_strength)
    out["cvr"] = _smoothed(state, "purchase_count", "click_count", fc.cvr_prior_mean, fc.cvr_prior_strength)
    last = state.get("last_event_ts")
    out["recency_seconds"] = None if last is None else t_s - _seconds(last)
    if entity.name == USER:
        factor = 2.0 ** (-age / fc.affinity_half_life)
        ranked = sorted(((w * factor, c) for c, w in (state.get("category_weights") or [])), reverse=True)
        out["recent_item_ids"] = [e["item_id"] for e in (state.get("recent_items") or [])]
        out["top_categories"] = [{"category_id": c, "weight": w} for w, c in ranked[:fc.affinity_top_k]]
        priced = state.get("purchase_priced_count") or 0
        out["avg_purchase_price"] = state["purchase_price_sum"] / priced if priced > 0 else None
    if entity.name == ITEM:
        out["category_id"] = (state.get("latest_category") or {}).get("value")
        out["price"] = (state.get("latest_price") or {}).get("value")
        sketch = state.get("users_hll")
        # Spark's hll_sketch_estimate rounds the estimate to a whole number
        out["distinct_users"] = None if sketch is None else round(ds.hll_sketch.deserialize(sketch).get_estimate())
    return out


def _smoothed(state: dict[str, Any], successes: str, trials: str, mean: float, strength: float) -> float | None:
    s, n = state.get(successes), state.get(trials)
    if s is None or n is None:
        return None
    return (s + mean * strength) / (n + strength)
