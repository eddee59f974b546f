"""Training and judging the ranking stage inside ``recsys train`` (``ranking.enabled``).

1. Rows: the training labels of the last ``ranking.days`` before the holdout's cutoff, with
   their point-in-time query features (the retrieval model's training rows).
2. Pairs: each label a positive, ``ranking.negatives`` hard negatives from the trained
   retrieval model's top ``ranking.candidates`` for the same query; features from
   :func:`recsys_lib.models.ranking.pair_features` (embeddings from the retrieval model just
   trained, items as in the holdout's catalogue).
3. Fit the DCN-v2 ranker; then on the holdout, score the retrieval's top candidates alone and
   re-ranked, with the same filters and metrics as every other model.

The bundle keeps the ranker with ``used`` true only when re-ranking beat retrieval alone on
``evaluate.promote_metric``; otherwise it is kept for inspection and serving ignores it.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from recsys_lib.core.config import RecsysConfig
from recsys_lib.models.holdout import Holdout
from recsys_lib.pipelines.train import Prepared


def train_ranker(model: Any, prep: Prepared, cfg: RecsysConfig) -> tuple[Any, dict[str, Any]]:
    """Fit the ranker for ``model`` (see the module docstring); returns it and its report.

    Raises:
        ValueError: If the ranking window holds no labels of a catalogue item.

    """
    from recsys_lib.models.data import candidate_chunk, encode, normalised_numeric, query_chunk, read_rows
    from recsys_lib.models.ranking import RankerSpec, fit_ranker, pair_features, training_pairs

    rc, ec, spec, holdout = cfg.ranking, cfg.evaluate, prep.spec, prep.holdout
    since = (prep.cutoff - timedelta(days=rc.days)).date().isoformat()
    rows = read_rows(prep.files, spec, list(cfg.train.label_types), since=since)
    catalogue = pa.Table.from_pandas(holdout.items, preserve_index=False)
    positives = holdout.item_ids.get_indexer(rows.column("item_id").to_pylist()) if rows.num_rows else np.zeros(0)
    keep = np.flatnonzero(positives >= 0)
    if len(keep) == 0:
        raise ValueError(f"ranking: no labels of catalogue items since {since} (ranking.days={rc.days})")
    rows = rows.take(pa.array(keep))
    queries = encode(model.query, query_chunk(rows, spec))
    items = encode(model.candidate, candidate_chunk(catalogue, spec))
    q_num = normalised_numeric(rows, spec, "query")
    i_num = normalised_numeric(catalogue, spec, "item")
    at, item, labels = training_pairs(queries, positives[keep], items, negatives=rc.negatives,
                                      candidates=rc.candidates, seed=cfg.train.seed)
    features = pair_features(queries[at], items[item], q_num[at], i_num[item])
    started = time.monotonic()
    ranker, epochs = fit_ranker(features, labels, RankerSpec(features.shape[1], rc.cross_layers,
                                                             list(rc.deep_layers)),
                                epochs=rc.epochs, batch_size=rc.batch_size, learning_rate=rc.learning_rate,
                                seed=cfg.train.seed)
    seconds = time.monotonic() - started

    alone, reranked = reranked_metrics(model, ranker, holdout, cfg, rc.candidates)
    metric = ec.promote_metric
    return ranker, {"used": reranked.get(metric, 0.0) > alone.get(metric, 0.0), "metric": metric,
                    "retrieval": alone, "retrieval_and_ranking": reranked, "labels": int(len(keep)),
                    "candidates": rc.candidates,
                    "pairs": int(len(labels)), "since": since, "epochs": epochs,
                    "train_seconds": round(seconds, 2),
                    "examples_per_second": round(len(labels) * rc.epochs / seconds, 1) if seconds else 0.0}


def reranked_metrics(model: Any, ranker: Any, holdout: Holdout, cfg: RecsysConfig,
                     candidates: int) -> tuple[dict[str, float], dict[str, float]]:
    """``model``'s holdout metrics alone and with its top ``candidates`` re-ranked by ``ranker``.

    The same filters and metrics as every other model (``evaluate.*``).
    """
    from recsys_lib.models.data import candidate_chunk, encode, normalised_numeric, query_chunk
    from recsys_lib.models.evaluate import embedding_scorer, ranked
    from recsys_lib.models.metrics import ranking_metrics
    from recsys_lib.models.ranking import rerank

    ec, spec = cfg.evaluate, model.spec
    catalogue = pa.Table.from_pandas(holdout.items, preserve_index=False)
    items = encode(model.candidate, candidate_chunk(catalogue, spec))
    i_num = normalised_numeric(catalogue, spec, "item")
    queries = encode(model.query, query_chunk(holdout.users, spec))
    q_num = normalised_numeric(holdout.users, spec, "query")
    k = max(ec.ks)
    top = ranked(embedding_scorer(queries, items), holdout, max(candidates, k),
                 filter_purchased=ec.filter_purchased, filter_seen=ec.filter_seen)
    n_items = len(holdout.items)
    alone = ranking_metrics(top[:, :k], holdout.truth, ec.ks, n_items)
    excluded = holdout.exclusions(np.arange(len(holdout.truth)), purchased=ec.filter_purchased, seen=ec.filter_seen)
    reranked = ranking_metrics(rerank(ranker, top, queries, q_num, items, i_num, excluded)[:, :k], holdout.truth,
                               ec.ks, n_items)
    return alone, reranked


def served_metrics(bundle: Any, holdout: Holdout, cfg: RecsysConfig) -> dict[str, float]:
    """The holdout metrics of what serving answers with ``bundle``: re-ranked if its ranker is used.

    The promotion gate and ``recsys evaluate`` judge a model version by these.
    """
    from recsys_lib.models.ranking import load_ranker
    from recsys_lib.pipelines.train import holdout_metrics

    ranking = bundle.meta.get("ranking") or {}
    if not ranking.get("used"):
        return holdout_metrics(bundle.model, holdout, cfg)
    ranker = load_ranker(bundle.path / "ranker")
    candidates = int(ranking.get("candidates", cfg.ranking.candidates))
    return reranked_metrics(bundle.model, ranker, holdout, cfg, candidates)[1]
