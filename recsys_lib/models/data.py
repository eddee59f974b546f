"""Input pipeline: Delta snapshot Parquet files -> pyarrow record batches -> ``tf.data``.

Rows stream from the snapshot's files in record batches; nothing holds the
training set in Python lists. Each worker keeps every ``num_workers``-th row
(offset by its index), so multi-worker training sees disjoint, equal shards.
Each pass shuffles the file order and the rows of each record batch, then
``tf.data`` unbatches, shuffles through a buffer, batches, maps the model's id
lookups over each batch, caches the result (``train.input_cache``) and prefetches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf

import recsys_lib.models  # noqa: F401 - sets TF_USE_LEGACY_KERAS before TensorFlow loads
from recsys_lib.lake.files import filesystem_for
from recsys_lib.models.two_tower import PAD, ModelSpec, input_signature

Chunk = dict[str, np.ndarray]


@dataclass(frozen=True)
class ItemPrior:
    """Sampling probability of each label item (its share of the training labels)."""

    ids: pd.Index
    probs: np.ndarray
    floor: float

    @classmethod
    def from_counts(cls, counts: Mapping[str, int]) -> ItemPrior:
        """Probabilities proportional to ``counts``; unseen items get half the smallest."""
        ids = pd.Index(list(counts))
        values = np.array(list(counts.values()), dtype=np.float64)
        probs = values / max(values.sum(), 1.0)
        return cls(ids, probs.astype(np.float32), float(probs.min() / 2) if len(probs) else 1.0)

    def lookup(self, items: np.ndarray) -> np.ndarray:
        """Probabilities for ``items``."""
        pos = self.ids.get_indexer(items)
        return np.where(pos >= 0, self.probs[np.maximum(pos, 0)], self.floor).astype(np.float32)


def padded(lists: pa.Array | pa.ChunkedArray, length: int) -> np.ndarray:
    """A list<string> column as a (rows x length) array, truncated and padded with ``PAD``."""
    arr = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    n = len(arr)
    out = np.full((n, length), PAD, dtype=object)
    if n == 0:
        return out
    arr = pc.fill_null(arr, pa.scalar([], arr.type))
    offsets = np.asarray(arr.offsets)
    values = np.asarray(arr.values.fill_null(PAD).to_numpy(zero_copy_only=False), dtype=object)
    sizes = np.diff(offsets)
    for j in range(length):
        rows = np.flatnonzero(sizes > j)
        out[rows, j] = values[offsets[rows] + j]
    return out


def padded_weights(lists: pa.Array | pa.ChunkedArray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """A list<struct<category_id, weight>> column as (ids, weights) arrays of (rows x length), padded."""
    arr = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    n = len(arr)
    ids, weights = np.full((n, length), PAD, dtype=object), np.zeros((n, length), np.float32)
    if n == 0:
        return ids, weights
    arr = pc.fill_null(arr, pa.scalar([], arr.type))
    offsets = np.asarray(arr.offsets)
    flat = arr.values
    cat = np.asarray(pc.fill_null(flat.field("category_id"), PAD).to_numpy(zero_copy_only=False), dtype=object)
    wt = pc.fill_null(flat.field("weight"), 0.0).to_numpy().astype(np.float32)
    sizes = np.diff(offsets)
    for j in range(length):
        rows = np.flatnonzero(sizes > j)
        ids[rows, j] = cat[offsets[rows] + j]
        weights[rows, j] = wt[offsets[rows] + j]
    return ids, weights


def numeric(table: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """Columns as a float32 (rows x columns) array, nulls as 0."""
    if not columns:
        return np.zeros((table.num_rows, 0), np.float32)
    return np.stack([pc.fill_null(table.column(c), 0).to_numpy().astype(np.float32) for c in columns], axis=1)


def text(table: pa.Table, column: str) -> np.ndarray:
    """A string column as an object array, nulls as ``PAD``."""
    return np.asarray(pc.fill_null(table.column(column).cast(pa.string()), PAD).to_numpy(zero_copy_only=False),
                      dtype=object)


def query_chunk(table: pa.Table, spec: ModelSpec) -> Chunk:
    """Query-side model inputs from rows with ``user_id``, ``u_*``, ``u_recent_items`` and ``u_top_categories``."""
    cats, weights = padded_weights(table.column("u_top_categories"), spec.top_categories)
    return {"user_id": text(table, "user_id"), "u_numeric": numeric(table, spec.query_numeric),
            "recent_items": padded(table.column("u_recent_items"), spec.recent_len),
            "top_categories": cats, "top_category_weights": weights}


def candidate_chunk(table: pa.Table, spec: ModelSpec) -> Chunk:
    """Candidate-side model inputs from rows with ``item_id``, ``category_id``, ``price`` and ``i_*`` columns."""
    price = pc.fill_null(table.column("price").cast(pa.float32()), -1.0).to_numpy().astype(np.float32)
    return {"item_id": text(table, "item_id"), "category_id": text(table, "category_id"), "price": price,
            "i_numeric": numeric(table, spec.item_numeric)}


def training_chunks(files: Sequence[str], spec: ModelSpec, prior: ItemPrior, *, worker: int = 0, workers: int = 1,
                    label_types: Sequence[str] | None = None, batch_rows: int = 8192,
                    mask_label_item: bool = True, seed: int = 0) -> Callable[[], Iterator[Chunk]]:
    """A generator factory over the files' rows (this worker's shard), reshuffled on every call.

    Rows whose ``label_type`` is not in ``label_types`` (when given) are skipped.
    With ``mask_label_item`` the label's own item is blanked out of the recent
    items: a click is usually preceded by a view of the same item seconds earlier,
    and a model that learns to copy it is useless for recommending what comes next.
    """
    columns = ["user_id", "item_id", "category_id", "price", "u_recent_items", "u_top_categories", "label_type",
               *spec.query_numeric,
               *spec.item_numeric]
    wanted = pa.array(list(label_types)) if label_types else None
    passes = [0]

    def generate() -> Iterator[Chunk]:
        rng = np.random.default_rng(seed + passes[0])
        passes[0] += 1
        seen = 0
        for i in rng.permutation(len(files)):
            fs, path = filesystem_for(files[i])
            with fs.open_input_file(path) as handle:
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_rows, columns=columns):
                    if wanted is not None:
                        batch = batch.filter(pc.is_in(batch.column("label_type"), value_set=wanted))
                    keep = np.flatnonzero((np.arange(seen, seen + batch.num_rows) % workers) == worker)
                    seen += batch.num_rows
                    if len(keep) == 0:
                        continue
                    table = pa.Table.from_batches([batch]).take(pa.array(rng.permutation(keep)))
                    chunk = query_chunk(table, spec) | candidate_chunk(table, spec)
                    if mask_label_item:
                        recent = chunk["recent_items"]
                        recent[recent == chunk["item_id"][:, None]] = PAD
                    chunk["item_prob"] = prior.lookup(chunk["item_id"])
                    yield chunk

    return generate


def training_dataset(generate: Callable[[], Iterator[Chunk]], spec: ModelSpec, batch_size: int, *,
                     shuffle_buffer: int, seed: int, repeat: bool = False,
                     featurize: Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]] | None = None,
                     cache: str | None = None) -> tf.data.Dataset:
    """Unbatch, shuffle, batch (dropping the remainder: in-batch negatives need full batches) and prefetch.

    Args:
        featurize: Applied to each batch (the model's id lookups), so training steps see numbers only.
        cache: Keep the featurized batches after the first pass: ``""`` in memory, a path prefix on disk,
            None to re-read the Parquet files every epoch. Later passes reshuffle the order of the
            batches (as TFRS's tutorials do, the rows of a batch stay together).

    """
    signature = {**input_signature(spec, "query"), **input_signature(spec, "candidate"),
                 "item_prob": tf.TensorSpec([None], tf.float32)}
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature).unbatch()
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    if featurize is not None:
        ds = ds.map(featurize, num_parallel_calls=tf.data.AUTOTUNE)
    if cache is not None:
        ds = ds.cache(cache).shuffle(_BATCH_SHUFFLE, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


#: Batches whose order is reshuffled on each pass over a cached dataset.
_BATCH_SHUFFLE = 256


def encode(fn: Callable[[dict[str, tf.Tensor]], tf.Tensor], chunk: Chunk, batch: int = 4096) -> np.ndarray:
    """Apply a tower to a chunk of inputs in batches; returns (rows x dim) float32."""
    n = len(next(iter(chunk.values())))
    parts = [fn({k: tf.constant(v[s:s + batch]) for k, v in chunk.items()}).numpy() for s in range(0, n, batch)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
