"""Fit the two-tower model under a ``tf.distribute`` strategy chosen by config.

``train.strategy``:

* ``default``: one device (TensorFlow places work on a GPU when there is one);
* ``mirrored``: synchronous data parallelism over all local GPUs;
* ``multi_worker``: ``MultiWorkerMirroredStrategy`` over the cluster in
  ``TF_CONFIG``; each worker reads its own shard (see :mod:`recsys_lib.models.data`).

``train.mixed_precision`` turns on the ``mixed_float16`` policy (only useful on GPUs).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf

import recsys_lib.models  # noqa: F401 - sets TF_USE_LEGACY_KERAS before TensorFlow loads
from recsys_lib.core.config import TrainConfig
from recsys_lib.models.data import Chunk, training_dataset
from recsys_lib.models.two_tower import ModelSpec, TwoTower, build, load_weights


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy named in ``train.strategy``.

    Raises:
        ValueError: On an unknown name, or ``multi_worker`` without ``TF_CONFIG``.

    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("train.strategy=multi_worker needs TF_CONFIG describing the cluster and this task")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"train.strategy: unknown strategy {name!r}; expected default, mirrored or multi_worker")


def worker_position() -> tuple[int, int]:
    """Return this worker's index and the number of workers from ``TF_CONFIG`` ((0, 1) without it)."""
    conf = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    cluster = conf.get("cluster", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    task = conf.get("task", {})
    index = int(task.get("index", 0)) + (1 if task.get("type") == "worker" and "chief" in cluster else 0)
    return (index, workers) if workers else (0, 1)


@dataclass
class FitResult:
    """A trained model and how training went."""

    model: TwoTower
    epochs: list[dict[str, float]] = field(default_factory=list)
    examples: int = 0
    seconds: float = 0.0

    @property
    def examples_per_second(self) -> float:
        """Training throughput over all epochs."""
        return self.examples / self.seconds if self.seconds else 0.0


class _EpochLog(tf.keras.callbacks.Callback):
    def __init__(self, out: list[dict[str, float]], on_epoch: Callable[[int, dict[str, float]], None] | None) -> None:
        super().__init__()
        self.out, self.on_epoch, self.started = out, on_epoch, 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        row = {k: float(v) for k, v in (logs or {}).items()} | {"epoch_seconds": time.monotonic() - self.started}
        self.out.append(row)
        if self.on_epoch:
            self.on_epoch(epoch, row)


def fit(spec: ModelSpec, make_chunks: Callable[[int, int], Callable[[], Iterator[Chunk]]], rows: int,
        tc: TrainConfig, *, epochs: int | None = None, init_weights: dict[str, Any] | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        callbacks: Sequence[tf.keras.callbacks.Callback] = ()) -> FitResult:
    """Train a model on ``rows`` examples.

    Args:
        spec: Vocabularies and sizes.
        make_chunks: ``(worker, workers) -> generator factory`` of input chunks for that shard.
        rows: Training rows in all shards together (sets the steps per epoch).
        tc: Hyper-parameters and the strategy.
        epochs: Overrides ``tc.epochs`` (warm start trains fewer).
        init_weights: Saved weights to start from (warm start); embeddings may have grown.
        on_epoch: Called with (epoch, metrics) after each epoch, e.g. to log to MLflow.
        callbacks: More Keras callbacks, run after ``on_epoch`` (e.g. early stopping on a validation split).

    Raises:
        ValueError: If there are fewer rows than one global batch.

    """
    if tc.mixed_precision:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    tf.keras.utils.set_random_seed(tc.seed)
    strategy = make_strategy(tc.strategy)
    worker, workers = worker_position() if tc.strategy == "multi_worker" else (0, 1)
    global_batch = tc.batch_size
    steps = rows // global_batch
    if steps < 1:
        raise ValueError(f"{rows} training rows are fewer than one batch of train.batch_size={global_batch}")
    with strategy.scope():
        model = build(spec)
        if init_weights is not None:
            load_weights(model, init_weights)
        # XLA has no kernels for the cross-replica collectives, so only single-replica steps are compiled
        jit = tc.jit_compile and strategy.num_replicas_in_sync == 1 and tc.strategy != "multi_worker"
        model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=tc.learning_rate), jit_compile=jit,
                      steps_per_execution=tc.steps_per_execution)
    cache_dir = tempfile.TemporaryDirectory(prefix="recsys-train-cache-") if tc.input_cache == "disk" else None

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        shard = ctx.input_pipeline_id if ctx.num_input_pipelines > 1 else worker
        shards = max(ctx.num_input_pipelines, workers)
        cache = None if tc.input_cache == "none" else (f"{cache_dir.name}/shard{shard}" if cache_dir else "")
        return training_dataset(make_chunks(shard, shards), spec, ctx.get_per_replica_batch_size(global_batch),
                                shuffle_buffer=tc.shuffle_buffer, seed=tc.seed, repeat=True,
                                featurize=model.featurize, cache=cache, time_local=tc.batching == "time_local")

    if tc.strategy == "default":
        data = dataset_fn(tf.distribute.InputContext())  # one pipeline: skip the distributed-iterator overhead
    else:
        data = strategy.distribute_datasets_from_function(dataset_fn)
    log: list[dict[str, float]] = []
    n_epochs = epochs or tc.epochs
    started = time.monotonic()
    try:
        model.fit(data, epochs=n_epochs, steps_per_epoch=steps, verbose=0,
                  callbacks=[_EpochLog(log, on_epoch), *callbacks])
    finally:
        if cache_dir is not None:
            cache_dir.cleanup()
    seconds = time.monotonic() - started
    return FitResult(model=model, epochs=log, examples=steps * global_batch * len(log), seconds=seconds)
