"""Serving: export the champion's index over the current items, recommend for one user, batch top-K.

``recsys export`` re-encodes every item in ``item_features`` with the champion's
candidate tower, rebuilds the ANN index, checks its recall against exact search
and writes the serving bundle to ``<home>/serving/current``. ``recsys recommend``
and the batch job read that bundle (or the champion's own when no export exists).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from recsys_lib.core.config import RecsysConfig
from recsys_lib.core.privacy import stored_id
from recsys_lib.core.schema import EVENTS_TABLE
from recsys_lib.lake import Lake, TableSpec
from recsys_lib.serving.model import serving_dir

Say = Callable[[str], None]
RECOMMENDATIONS_TABLE = "recommendations"
RECOMMENDATIONS_SCHEMA = T.StructType([
    T.StructField("user_id", T.StringType(), False),
    T.StructField("rank", T.IntegerType(), False),
    T.StructField("item_id", T.StringType(), False),
    T.StructField("score", T.DoubleType(), True),
    T.StructField("category_id", T.StringType(), True),
    T.StructField("price", T.DoubleType(), True),
    T.StructField("model_version", T.StringType(), False),
    T.StructField("generated_at", T.TimestampType(), False),
])


def feature_time(spark: SparkSession, cfg: RecsysConfig) -> datetime:
    """The time serving reads features at: the newest event folded into ``item_features``.

    With a running stream this trails the wall clock by seconds; for historical data
    (the demo, benchmarks) it keeps decayed features meaningful instead of decaying
    them to zero between the data's last day and today.
    """
    from recsys_lib.features import entities
    from recsys_lib.lake import open_lake

    # the raw table suffices: a merged row's as_of is the larger of its base and pending rows'
    row = open_lake(spark, cfg).read(entities(cfg.features)["item"].table).agg(F.max("as_of")).first()
    if row is None or row[0] is None:
        raise ValueError("item_features is empty: run `recsys features refresh` first")
    value: datetime = row[0]
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def index_current_items(spark: SparkSession, cfg: RecsysConfig, model: Any,
                        queries: np.ndarray | None = None) -> tuple[pa.Table, np.ndarray, Any, float, datetime]:
    """Encode every item of ``item_features`` (at :func:`feature_time`) with ``model`` and index them.

    Returns:
        (items, embeddings, index, recall@100 of the index against exact search on ``queries``
        (random probes when None; 1.0 for brute force), the features' time).

    """
    from recsys_lib.features import load_features
    from recsys_lib.models.data import candidate_chunk, encode
    from recsys_lib.models.feature_inputs import item_inputs
    from recsys_lib.models.index import BruteForceIndex, build_index, recall_against_exact

    at = feature_time(spark, cfg)
    items = item_inputs(load_features(spark, "item", at, cfg=cfg), model.spec).orderBy("item_id").toArrow()
    embeddings = encode(model.candidate, candidate_chunk(items, model.spec))
    index = build_index(embeddings, cfg.serve.index, cfg.serve.scann_min_items)
    if queries is None:
        queries = np.random.default_rng(0).normal(size=(500, embeddings.shape[1])).astype(np.float32)
    recall = 1.0 if isinstance(index, BruteForceIndex) else recall_against_exact(
        index, embeddings, queries[:2000], min(100, len(embeddings)))
    return items, embeddings, index, recall, at


def _champion(cfg: RecsysConfig) -> Any:
    from recsys_lib.models import tracking

    client = tracking.configure(cfg)
    found = tracking.model_version(client, cfg.mlflow.registered_model, alias=tracking.CHAMPION)
    if found is None:
        raise ValueError(f"'{cfg.mlflow.registered_model}' has no '{tracking.CHAMPION}': run `recsys train` and "
                         "`recsys promote` first")
    return found


def run_export(spark: SparkSession, lake: Lake, cfg: RecsysConfig, say: Say = print) -> dict[str, Any]:
    """Write ``<home>/serving/current``: the champion with item embeddings and an index over current items."""
    from recsys_lib.models.bundle import Bundle

    started = time.monotonic()
    champion = _champion(cfg)
    bundle = Bundle(champion.bundle)
    items, embeddings, index, recall, at = index_current_items(spark, cfg, bundle.model)
    target = serving_dir(cfg)
    staging = target.with_name("staging")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(bundle.path, staging)
    shutil.rmtree(staging / "index")
    catalogue = items.select(["item_id", "category_id", "price"]).to_pandas()
    catalogue.assign(embedding=list(embeddings)).to_parquet(staging / "items.parquet", index=False)
    index.save(staging / "index")
    meta = bundle.meta | {"model_version": champion.version, "index": index.kind, "features_at": at.isoformat(),
                          "index_recall_at_100": recall,
                          "items": len(embeddings), "exported_at": datetime.now(UTC).isoformat()}
    (staging / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    say(f"exported version {champion.version}: {len(embeddings):,} items, {index.kind} index "
        f"(recall@100 vs exact {recall:.3f}) to {target}")
    return {"version": champion.version, "items": len(embeddings), "index": index.kind, "recall_at_100": recall,
            "path": str(target), "seconds": round(time.monotonic() - started, 2)}


def _served(cfg: RecsysConfig) -> Any:
    """The exported model (``recsys export``), else the champion's bundle, loaded as ``recsys serve`` loads it.

    The export is taken as it is, without asking the registry (which downloads the champion's bundle
    to compare): the batch jobs run right after ``export``.
    """
    from recsys_lib.serving.model import ServedModel, resolve

    exported = (serving_dir(cfg) / "meta.json").exists()
    return ServedModel.load(resolve(cfg, use_registry=not exported))


def _purchased(lake: Lake, users: list[str]) -> dict[str, set[str]]:
    rows = (lake.read(EVENTS_TABLE).where((F.col("event_type") == "purchase") & F.col("user_id").isin(users))
            .select("user_id", "item_id").distinct().collect())
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(r["user_id"], set()).add(r["item_id"])
    return out


def _rank(model: Any, users: pa.Table, k: int, purchased: dict[str, set[str]]) -> list[list[tuple[str, float]]]:
    """Top-k (item_id, score) per user row without purchased items: the API's search, ranker included."""
    from recsys_lib.models.data import normalised_numeric

    queries = model.bundle.encode_queries(users)
    q_numeric = normalised_numeric(users, model.bundle.spec, "query") if model.ranker is not None else None
    exclude = [purchased.get(u, set()) for u in users.column("user_id").to_pylist()]
    return [[(str(model.item_ids[i]), s) for i, s in row] for row in model.search(queries, k, exclude,
                                                                                  q_numeric=q_numeric)]


def run_recommend(spark: SparkSession, lake: Lake, cfg: RecsysConfig, user: str, k: int | None = None,
                  at: datetime | None = None) -> pd.DataFrame:
    """Top-k items for ``user`` (the shop's raw id) from their features at ``at`` (default: :func:`feature_time`).

    Ranked as ``recsys serve`` ranks: retrieval, then the model's ranking stage when its bundle serves one.
    An unknown user gets the most popular training items instead.
    """
    from recsys_lib.features import load_features
    from recsys_lib.models.feature_inputs import user_inputs

    k = k or cfg.serve.k
    at = at or feature_time(spark, cfg)
    model = _served(cfg)
    bundle, version = model.bundle, model.version
    user = stored_id(cfg, user)  # the shop's raw id -> the pseudonym the tables hold
    rows = user_inputs(load_features(spark, "user", at, cfg=cfg).where(F.col("user_id") == user),
                       bundle.spec).toArrow()
    purchased = _purchased(lake, [user])
    if rows.num_rows:
        picks = _rank(model, rows, k, purchased)[0]
        source = "two_tower + ranker" if model.ranker is not None else "two_tower"
    else:
        popular = [i for i in model.popular if i not in purchased.get(user, set())]
        picks, source = [(i, float("nan")) for i in popular[:k]], "popular (unknown user)"
    catalogue = bundle.items.set_index("item_id")
    return pd.DataFrame({"rank": range(1, len(picks) + 1), "item_id": [p[0] for p in picks],
                         "score": [p[1] for p in picks],
                         "category_id": [catalogue["category_id"].get(p[0]) for p in picks],
                         "price": [catalogue["price"].get(p[0]) for p in picks],
                         "source": source, "model_version": version})


def run_batch_recommendations(spark: SparkSession, lake: Lake, cfg: RecsysConfig, *, k: int | None = None,
                              block: int = 20_000, say: Say = print) -> dict[str, Any]:
    """Top-k for every user active within ``serve.active_window`` of the newest event, into ``recommendations``."""
    from recsys_lib.features import load_features
    from recsys_lib.models.feature_inputs import user_inputs

    started = time.monotonic()
    k = k or cfg.serve.batch_k
    model = _served(cfg)
    bundle, version = model.bundle, model.version
    users_df = load_features(spark, "user", feature_time(spark, cfg), cfg=cfg)
    newest = users_df.agg(F.max("last_event_ts")).first()
    if newest is None or newest[0] is None:
        raise ValueError("user_features is empty: run `recsys features refresh` first")
    since = newest[0] - timedelta(seconds=cfg.serve.active_window)
    active = user_inputs(users_df.where(F.col("last_event_ts") >= F.lit(since)), bundle.spec).toArrow()
    purchased = _purchased(lake, active.column("user_id").to_pylist())
    catalogue = bundle.items.set_index("item_id")
    generated = datetime.now(UTC)
    frames = []
    for start in range(0, active.num_rows, block):
        part = active.slice(start, block)
        for user, picks in zip(part.column("user_id").to_pylist(), _rank(model, part, k, purchased), strict=True):
            frames.append(pd.DataFrame({"user_id": user, "rank": np.arange(1, len(picks) + 1, dtype=np.int32),
                                        "item_id": [p[0] for p in picks], "score": [p[1] for p in picks]}))
    recs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {"user_id": [], "rank": [], "item_id": [], "score": []})
    recs["category_id"] = catalogue["category_id"].reindex(recs["item_id"]).to_numpy()
    recs["price"] = pd.to_numeric(catalogue["price"].reindex(recs["item_id"]), errors="coerce").to_numpy()
    recs["model_version"] = version
    recs["generated_at"] = pd.Timestamp(generated).tz_convert("UTC").tz_localize(None)
    table = pa.Table.from_pandas(recs.astype({"rank": "int32"}), preserve_index=False)
    df = spark.createDataFrame(table.to_pandas(), RECOMMENDATIONS_SCHEMA)
    result = lake.overwrite(TableSpec(RECOMMENDATIONS_TABLE, RECOMMENDATIONS_SCHEMA), df,
                            metadata={"job": "recommendations", "model_version": version, "k": k})
    say(f"recommendations: top-{k} for {active.num_rows:,} active users ({result.rows:,} rows) from model "
        f"version {version} into '{RECOMMENDATIONS_TABLE}' version {result.version}")
    return {"users": active.num_rows, "rows": result.rows, "version": result.version, "model_version": version,
            "ranked": model.ranker is not None, "seconds": round(time.monotonic() - started, 2)}
