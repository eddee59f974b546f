"""Training throughput, against TFRS's basic-retrieval two-tower; warm start against a full retrain.

Writes bench/results/train.json. On a synthetic sample (prepared once under
``--work``, reused afterwards):

1. **Throughput.** Our model and input pipeline (Delta snapshot Parquet files ->
   pyarrow batches -> tf.data) for ``--epochs`` epochs at a fixed configuration;
   then, on the same rows, the plain two-tower of the TFRS basic-retrieval tutorial
   (user-id and item-id embeddings, in-memory ``from_tensor_slices``), once as
   published (FactorizedTopK metrics over all candidates every step) and once
   without metrics. ``ratio`` = our examples/s / the tutorial's without metrics
   (the strict comparison; target >= 1.0). ``input_pipeline_efficiency`` = our
   examples/s / our same model's when fed featurized tensors from memory (1.0: the
   Parquet -> tf.data pipeline costs nothing once its first pass is cached).
   ``same_model_pipeline_ratio`` isolates the input side: the tutorial's own model
   fed by our pipeline / fed by its in-memory ``from_tensor_slices`` (>= 1.0: our
   pipeline is not the bottleneck; ``ratio`` below 1.0 is then our larger model).
2. **Ranking stage.** The DCN-v2 ranker (``recsys_lib.pipelines.ranking``) trained on the
   retrieval model of step 1 with the default ``ranking`` settings: pairs, examples/s (pairs ×
   epochs / fit seconds) and the holdout's recall@50 / NDCG@10 of retrieval alone and re-ranked.
3. **Warm start.** A "yesterday" model trained on labels up to ``warm_start_days``
   before the cutoff, then warm-started on the newest days only, against a full
   retrain on everything: holdout metrics and seconds of each.

    python bench/train.py --events 300000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _prepare(home: Path, events: int) -> Any:
    from recsys_lib.core.config import load_config
    from recsys_lib.pipelines.context import start
    from recsys_lib.pipelines.demo import prepare_sample
    from recsys_lib.pipelines.train import prepare

    cfg = load_config(overrides=[f"home={home}", "spark.master=local[2]"])
    prepare_sample(cfg, events=events, users=max(500, events // 70), items=max(200, events // 140), days=14)
    ctx = start(cfg)
    try:
        full = prepare(ctx.spark, ctx.lake, cfg)
        warm = prepare(ctx.spark, ctx.lake, cfg, base_spec=full.spec)
    finally:
        ctx.stop()
    return cfg, full, warm


def _ours(cfg: Any, prep: Any, epochs: int) -> dict[str, Any]:
    from recsys_lib.models.data import chunk_source
    from recsys_lib.models.trainer import fit

    tc = cfg.train.model_copy(update={"epochs": epochs})
    result = fit(prep.spec, chunk_source(prep.files, prep.spec, prep.prior, tc), prep.rows, tc)
    steady = result.epochs[1:] or result.epochs
    per_epoch = prep.rows // tc.batch_size * tc.batch_size
    return {"epochs": epochs, "examples": result.examples, "seconds": round(result.seconds, 2),
            "examples_per_second": round(result.examples_per_second, 1),
            "steady_epoch_seconds": round(sum(e["epoch_seconds"] for e in steady) / len(steady), 2),
            "steady_examples_per_second": round(per_epoch / (sum(e["epoch_seconds"] for e in steady) / len(steady)),
                                                1), "model": result.model}


def _ranker(cfg: Any, prep: Any, model: Any) -> dict[str, Any]:
    """The ranking stage on ``model`` (our retrieval model): its training speed and what re-ranking changed."""
    from recsys_lib.pipelines.ranking import train_ranker

    ranked = cfg.model_copy(update={"ranking": cfg.ranking.model_copy(update={"enabled": True})})
    _, report = train_ranker(model, prep, ranked)
    keys = ("recall@50", "ndcg@10")
    return {"pairs": report["pairs"], "epochs": ranked.ranking.epochs, "seconds": report["train_seconds"],
            "examples_per_second": report["examples_per_second"], "used": report["used"],
            "retrieval": {k: round(report["retrieval"][k], 4) for k in keys},
            "retrieval_and_ranking": {k: round(report["retrieval_and_ranking"][k], 4) for k in keys}}


def _tutorial(prep: Any, cfg: Any, epochs: int, with_metrics: bool, our_pipeline: bool = False) -> dict[str, Any]:
    """The TFRS basic-retrieval tutorial's model on the same rows (its code pattern, our data).

    With ``our_pipeline`` the same model is fed by our input pipeline instead of the
    tutorial's in-memory ``from_tensor_slices``: Parquet files -> pyarrow chunks ->
    tf.data with the id lookups done once per batch in the pipeline and cached, and
    our ``steps_per_execution``. Same model, same rows: only the input side differs.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    from recsys_lib.models.data import training_chunks, training_dataset

    tc = cfg.train
    tables = [pq.read_table(f, columns=["user_id", "item_id", "label_type"]) for f in prep.files]
    table = pa.concat_tables(tables)
    table = table.filter(pc.is_in(table.column("label_type"), pa.array(list(tc.label_types))))
    users = np.asarray(table.column("user_id").to_pylist(), dtype=object)
    items = np.asarray(table.column("item_id").to_pylist(), dtype=object)
    dim, batch = tc.embedding_dim, tc.batch_size
    user_lookup = tf.keras.layers.StringLookup(vocabulary=sorted(set(users)), mask_token=None)
    item_lookup = tf.keras.layers.StringLookup(vocabulary=sorted(set(items)), mask_token=None)

    class Tutorial(tfrs.Model):
        def __init__(self) -> None:
            super().__init__()
            self.user_model = tf.keras.layers.Embedding(len(set(users)) + 1, dim)
            self.item_model = tf.keras.layers.Embedding(len(set(items)) + 1, dim)
            candidates = (tf.data.Dataset.from_tensor_slices(sorted(set(items))).batch(128)
                          .map(lambda i: self.item_model(item_lookup(i))))
            metrics = tfrs.metrics.FactorizedTopK(candidates=candidates) if with_metrics else None
            self.task = tfrs.tasks.Retrieval(metrics=metrics)

        def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
            if our_pipeline:
                u, i = features["user_idx"], features["item_idx"]
            else:
                u, i = user_lookup(features["user_id"]), item_lookup(features["item_id"])
            return self.task(self.user_model(u), self.item_model(i), compute_metrics=with_metrics)

    tf.keras.utils.set_random_seed(tc.seed)
    model = Tutorial()
    if our_pipeline:
        chunks = training_chunks(prep.files, prep.spec, prep.prior, label_types=list(tc.label_types), seed=tc.seed)
        data = training_dataset(chunks, prep.spec, batch, shuffle_buffer=tc.shuffle_buffer, seed=tc.seed, cache="",
                                repeat=True, featurize=lambda f: {"user_idx": user_lookup(f["user_id"]),
                                                     "item_idx": item_lookup(f["item_id"])})
        model.compile(optimizer=tf.keras.optimizers.Adam(tc.learning_rate),
                      steps_per_execution=tc.steps_per_execution)
    else:
        data = (tf.data.Dataset.from_tensor_slices({"user_id": users, "item_id": items})
                .shuffle(min(len(users), tc.shuffle_buffer), seed=tc.seed).batch(batch, drop_remainder=True)
                .prefetch(tf.data.AUTOTUNE))
        model.compile(optimizer=tf.keras.optimizers.Adam(tc.learning_rate))
    steps = len(users) // batch if our_pipeline else None
    return {"with_metrics": with_metrics, "our_pipeline": our_pipeline,
            **_timed_fit(model, data, epochs, len(users) // batch * batch, steps)}


def _timed_fit(model: Any, data: Any, epochs: int, per_epoch: int, steps: int | None = None) -> dict[str, Any]:
    """Fit ``model`` on ``data``, timing each epoch (the first includes tracing and filling caches)."""
    import tensorflow as tf

    times: list[float] = []

    class Clock(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self.t)

    model.fit(data, epochs=epochs, steps_per_epoch=steps, verbose=0, callbacks=[Clock()])
    steady = sum(times[1:] or times) / len(times[1:] or times)
    return {"rows": per_epoch, "epoch_seconds": [round(t, 2) for t in times],
            "steady_epoch_seconds": round(steady, 2), "steady_examples_per_second": round(per_epoch / steady, 1)}


def _ours_in_memory(cfg: Any, prep: Any, epochs: int) -> dict[str, Any]:
    """Our model fed from featurized tensors already in memory: its speed with a free input pipeline."""
    import numpy as np
    import tensorflow as tf

    from recsys_lib.models.data import training_chunks
    from recsys_lib.models.two_tower import build

    tc = cfg.train
    chunks = list(training_chunks(prep.files, prep.spec, prep.prior, label_types=list(tc.label_types),
                                  seed=tc.seed)())
    rows = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    tf.keras.utils.set_random_seed(tc.seed)
    model = build(prep.spec)
    model.compile(optimizer=tf.keras.optimizers.Adam(tc.learning_rate), steps_per_execution=tc.steps_per_execution)
    data = (tf.data.Dataset.from_tensor_slices(rows).batch(tc.batch_size, drop_remainder=True)
            .map(model.featurize).cache().shuffle(256, seed=tc.seed).prefetch(tf.data.AUTOTUNE))
    for _ in data:  # featurize into the cache before the clock starts
        pass
    n = len(rows["item_id"])
    return _timed_fit(model, data, epochs, n // tc.batch_size * tc.batch_size)


def _warm_start(cfg: Any, full: Any, warm: Any, epochs: int) -> dict[str, Any]:
    """Full retrain on all labels vs warm start (yesterday's model + the newest days only)."""
    import dataclasses

    from recsys_lib.models.data import chunk_source
    from recsys_lib.models.trainer import fit
    from recsys_lib.models.two_tower import weight_arrays
    from recsys_lib.pipelines.train import holdout_metrics

    tc = cfg.train

    def run(prep: Any, files: list[str], rows: int, n_epochs: int, init: Any = None) -> tuple[Any, float]:
        t = time.perf_counter()
        result = fit(prep.spec, chunk_source(files, prep.spec, prep.prior, tc), rows, tc, epochs=n_epochs,
                     init_weights=init)
        return result.model, time.perf_counter() - t

    full_model, full_seconds = run(full, full.files, full.rows, tc.epochs)
    old_files = sorted(set(full.files) - set(warm.files))
    old_rows = max(tc.batch_size, full.rows - warm.rows)
    yesterday, _ = run(dataclasses.replace(full), old_files, old_rows, tc.epochs)
    warm_model, warm_seconds = run(warm, warm.files, warm.rows, tc.warm_start_epochs, weight_arrays(yesterday))
    keys = ("recall@10", "recall@50", "recall@100", "ndcg@10")
    return {"full_retrain": {"rows": full.rows, "epochs": tc.epochs, "seconds": round(full_seconds, 2),
                             **{k: round(v, 4) for k, v in holdout_metrics(full_model, full.holdout, cfg).items()
                                if k in keys}},
            "warm_start": {"rows": warm.rows, "epochs": tc.warm_start_epochs, "seconds": round(warm_seconds, 2),
                           "days": tc.warm_start_days,
                           **{k: round(v, 4) for k, v in holdout_metrics(warm_model, warm.holdout, cfg).items()
                              if k in keys}}}


def main() -> None:
    """Run the benchmark and write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--work", default=str(ROOT / "bench" / "work"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "train.json"))
    parser.add_argument("--skip-warm-start", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    cfg, full, warm = _prepare(Path(args.work) / f"train-home-{args.events}", args.events)
    ours = _ours(cfg, full, args.epochs)
    ranker = _ranker(cfg, full, ours.pop("model"))
    in_memory = _ours_in_memory(cfg, full, args.epochs)
    plain = _tutorial(full, cfg, args.epochs, with_metrics=False)
    published = _tutorial(full, cfg, min(args.epochs, 2), with_metrics=True)
    piped = _tutorial(full, cfg, args.epochs, with_metrics=False, our_pipeline=True)
    result: dict[str, Any] = {
        "benchmark": "train", "events": args.events, "training_rows": full.rows, "batch_size": cfg.train.batch_size,
        "embedding_dim": cfg.train.embedding_dim,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "ours": ours, "ranker": ranker, "ours_fed_from_memory": in_memory, "tfrs_tutorial_no_metrics": plain,
        "tfrs_tutorial_as_published": published, "tfrs_tutorial_model_on_our_pipeline": piped,
        "ratio": round(ours["steady_examples_per_second"] / plain["steady_examples_per_second"], 3),
        "ratio_vs_published": round(ours["steady_examples_per_second"] / published["steady_examples_per_second"], 3),
        "same_model_pipeline_ratio": round(piped["steady_examples_per_second"]
                                           / plain["steady_examples_per_second"], 3),
        "input_pipeline_efficiency": round(ours["steady_examples_per_second"]
                                           / in_memory["steady_examples_per_second"], 3),
    }
    print(json.dumps(result, indent=2), flush=True)
    if not args.skip_warm_start:
        result["warm_start"] = _warm_start(cfg, full, warm, args.epochs)
        print(json.dumps(result["warm_start"], indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
