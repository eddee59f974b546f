"""Input pipeline: Delta snapshot Parquet files -> pyarrow record batches -> ``tf.data``.

Rows stream from the snapshot's files in record batches; nothing holds the
training set in Python lists. Two ways to form batches (``train.batching``):

* ``shuffled``: each worker keeps every ``num_workers``-th row (offset by its
  index), so multi-worker training sees disjoint, equal shards. Each pass
  shuffles the file order and the rows of each record batch, then ``tf.data``
  unbatches and shuffles through a buffer. Item sampling probabilities are
  shares of all training labels.
* ``time_local``: rows in time order, in blocks of half a ``train.sampling_window``
  (each worker keeps every ``num_workers``-th block); batches are consecutive
  rows, so in-batch negatives come from the same period, and a row's item
  sampling probability is its item's share of the window of rows centred on it.

Then ``tf.data`` batches, maps the model's id lookups over each batch, caches the
result (``train.input_cache``), shuffles the order of the batches through a buffer
of 256 batches and prefetches.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf

import recsys_lib.models  # noqa: F401 - sets TF_USE_LEGACY_KERAS before TensorFlow loads
from recsys_lib.core.config import TrainConfig
from recsys_lib.lake.files import filesystem_for
from recsys_lib.models.two_tower import PAD, ModelSpec, input_signature, normalise_numeric

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


def _slots(offsets: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """For list offsets, a (rows x length) mask of the slots that hold a value, and each slot's value position."""
    starts = offsets[:-1].astype(np.int64)
    slot = np.arange(length, dtype=np.int64)
    return slot < np.diff(offsets)[:, None], starts[:, None] + slot


def padded(lists: pa.Array | pa.ChunkedArray, length: int) -> np.ndarray:
    """A list<string> column as a (rows x length) array, truncated and padded with ``PAD``."""
    arr = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    n = len(arr)
    out = np.full((n, length), PAD, dtype=object)
    if n == 0:
        return out
    if arr.null_count:
        arr = pc.fill_null(arr, pa.scalar([], arr.type))
    values = np.asarray(_filled(arr.values, PAD).to_numpy(zero_copy_only=False), dtype=object)
    filled, position = _slots(np.asarray(arr.offsets), length)
    out[filled] = values[position[filled]]
    return out


def padded_weights(lists: pa.Array | pa.ChunkedArray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """A list<struct<category_id, weight>> column as (ids, weights) arrays of (rows x length), padded."""
    arr = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    n = len(arr)
    ids, weights = np.full((n, length), PAD, dtype=object), np.zeros((n, length), np.float32)
    if n == 0:
        return ids, weights
    if arr.null_count:
        arr = pc.fill_null(arr, pa.scalar([], arr.type))
    flat = arr.values
    cat = np.asarray(_filled(flat.field("category_id"), PAD).to_numpy(zero_copy_only=False), dtype=object)
    wt = _filled(flat.field("weight"), 0.0).to_numpy().astype(np.float32)
    filled, position = _slots(np.asarray(arr.offsets), length)
    ids[filled] = cat[position[filled]]
    weights[filled] = wt[position[filled]]
    return ids, weights


def numeric(table: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """Columns as a float32 (rows x columns) array, nulls as 0."""
    if not columns:
        return np.zeros((table.num_rows, 0), np.float32)
    return np.stack([_filled(table.column(c), 0).to_numpy().astype(np.float32) for c in columns], axis=1)


def normalised_numeric(table: pa.Table, spec: ModelSpec, side: str) -> np.ndarray:
    """One side's (``query`` or ``item``) numeric inputs of ``table``, normalised as that tower normalises them."""
    if side == "query":
        return normalise_numeric(numeric(table, spec.query_numeric), spec.query_mean, spec.query_std)
    return normalise_numeric(numeric(table, spec.item_numeric), spec.item_mean, spec.item_std)


def text(table: pa.Table, column: str) -> np.ndarray:
    """A string column as an object array, nulls as ``PAD``."""
    return np.asarray(_filled(table.column(column).cast(pa.string()), PAD).to_numpy(zero_copy_only=False),
                      dtype=object)


def _filled(values: Any, fill: Any) -> Any:
    """``values`` with nulls replaced by ``fill`` (skips the compute call when there are none: serving's rows)."""
    return values if values.null_count == 0 else pc.fill_null(values, fill)


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


_COLUMNS = ("user_id", "item_id", "category_id", "price", "u_recent_items", "u_top_categories", "label_type")
_LABEL_DATE = re.compile(r"label_date=(\d{4}-\d{2}-\d{2})")


def _columns(spec: ModelSpec, *extra: str) -> list[str]:
    return [*_COLUMNS, *spec.query_numeric, *spec.item_numeric, *extra]


def _read(path: str, columns: list[str], wanted: pa.Array | None, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """One file's record batches, keeping rows whose ``label_type`` is in ``wanted`` (all when None)."""
    fs, local = filesystem_for(path)
    with fs.open_input_file(local) as handle:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_rows, columns=columns):
            yield batch if wanted is None else batch.filter(pc.is_in(batch.column("label_type"), value_set=wanted))


def _chunk(table: pa.Table, spec: ModelSpec, mask_label_item: bool) -> Chunk:
    chunk = query_chunk(table, spec) | candidate_chunk(table, spec)
    if mask_label_item:
        recent = chunk["recent_items"]
        recent[recent == chunk["item_id"][:, None]] = PAD
    return chunk


def read_rows(files: Sequence[str], spec: ModelSpec, label_types: Sequence[str], *, since: str = "") -> pa.Table:
    """Training rows of ``label_types`` from the files whose ``label_date=`` folder is ``since`` or later."""
    wanted = pa.array(list(label_types))
    parts = [pa.Table.from_batches([b]) for f in files
             if (m := _LABEL_DATE.search(f)) is None or m.group(1) >= since
             for b in _read(f, _columns(spec), wanted, 65536) if b.num_rows]
    return pa.concat_tables(parts) if parts else pa.table({})


def training_chunks(files: Sequence[str], spec: ModelSpec, prior: ItemPrior, *, worker: int = 0, workers: int = 1,
                    label_types: Sequence[str] | None = None, batch_rows: int = 8192,
                    mask_label_item: bool = True, seed: int = 0) -> Callable[[], Iterator[Chunk]]:
    """A generator factory over the files' rows (this worker's shard), reshuffled on every call.

    Rows whose ``label_type`` is not in ``label_types`` (when given) are skipped.
    With ``mask_label_item`` the label's own item is blanked out of the recent
    items: a click is usually preceded by a view of the same item seconds earlier,
    and a model that learns to copy it is useless for recommending what comes next.
    Each item's sampling probability (``item_prob``) is its share of all training labels (``prior``).
    """
    columns = _columns(spec)
    wanted = pa.array(list(label_types)) if label_types else None
    passes = [0]

    def generate() -> Iterator[Chunk]:
        rng = np.random.default_rng(seed + passes[0])
        passes[0] += 1
        seen = 0
        for i in rng.permutation(len(files)):
            for batch in _read(files[i], columns, wanted, batch_rows):
                keep = np.flatnonzero((np.arange(seen, seen + batch.num_rows) % workers) == worker)
                seen += batch.num_rows
                if len(keep) == 0:
                    continue
                chunk = _chunk(pa.Table.from_batches([batch]).take(pa.array(rng.permutation(keep))), spec,
                               mask_label_item)
                chunk["item_prob"] = prior.lookup(chunk["item_id"])
                yield chunk

    return generate


def time_local_chunks(files: Sequence[str], spec: ModelSpec, *, window: int, worker: int = 0, workers: int = 1,
                      label_types: Sequence[str] | None = None, max_skip: int = 0, batch_rows: int = 8192,
                      mask_label_item: bool = True, seed: int = 0) -> Callable[[], Iterator[Chunk]]:
    """A generator factory over the files' rows in time order, in blocks of half a ``window`` of rows.

    This is ``train.batching: time_local``. Files are read day by day (the ``label_date=`` folder in
    their path) and each day's rows are sorted by ``event_ts``; at most one day and three half-windows of
    rows are held at a time. A row's ``item_prob`` is its item's share of the ``window`` rows centred on
    it: the sampling probability of in-batch negatives drawn from batches of time-adjacent rows. A share
    of the whole training window would misjudge items that were popular only in some period; Yi et al.
    (RecSys 2019) estimate these probabilities from the recent stream for the same reason. Rows are
    yielded in blocks of half a window; worker ``worker`` of ``workers`` keeps every ``workers``-th block.
    Each pass first drops a random 0..``max_skip`` rows, so that batch boundaries move between passes.
    Label types and the label-item mask are as in :func:`training_chunks`.

    Raises:
        ValueError: If ``window`` is below 1.

    """
    if window < 1:
        raise ValueError(f"train.sampling_window must be at least 1 row, got {window}")
    columns = _columns(spec, "event_ts")
    wanted = pa.array(list(label_types)) if label_types else None
    days: dict[str, list[str]] = {}
    for f in files:
        found = _LABEL_DATE.search(f)
        days.setdefault(found.group(1) if found else "", []).append(f)
    passes = [0]

    half = max(window // 2, 1)

    def emit(rows: pa.Table, start: int, stop: int) -> Chunk:
        chunk = _chunk(rows.slice(start, stop - start), spec, mask_label_item)
        first = max(start - half, 0)  # the rows the block's windows can reach
        around = rows.slice(first, min(stop + half, rows.num_rows) - first)
        chunk["item_prob"] = window_shares(text(around, "item_id"), start - first, stop - first, half)
        return chunk

    def blocks(skip: int) -> Iterator[tuple[pa.Table, int, int]]:
        """Every block in time order, as (rows, start, stop): rows around it are context for its shares."""
        held = None
        start = 0
        for day in sorted(days):
            parts = [pa.Table.from_batches([b]) for f in sorted(days[day]) for b in _read(f, columns, wanted,
                                                                                        batch_rows)]
            rows = pa.concat_tables(parts, promote_options="default").sort_by("event_ts") if parts else None
            if rows is None or rows.num_rows <= skip:
                skip -= rows.num_rows if rows is not None else 0
                continue
            rows = rows.slice(skip)
            held = rows if held is None else pa.concat_tables([held, rows], promote_options="default")
            skip = 0
            while held.num_rows - start >= 2 * half:  # the next block and the context after it are here
                yield held, start, start + half
                held, start = held.slice(start), half  # keep one block of context before the next one
        while held is not None and start < held.num_rows:
            yield held, start, min(start + half, held.num_rows)
            start += half

    def generate() -> Iterator[Chunk]:
        rng = np.random.default_rng(seed + passes[0])
        passes[0] += 1
        for k, (rows, start, stop) in enumerate(blocks(int(rng.integers(0, max_skip + 1)))):
            if k % workers == worker:
                yield emit(rows, start, stop)

    return generate


def window_shares(items: np.ndarray, start: int, stop: int, half: int) -> np.ndarray:
    """For rows ``start..stop-1`` of ``items``: the share of rows ``r - half .. r + half`` that are row r's item.

    The window is clipped to the array, and the share is of the rows actually in it.
    """
    codes = pd.factorize(items)[0].astype(np.int64)
    n = len(codes)
    keys = np.sort(codes * n + np.arange(n))  # positions grouped by item, in order
    rows = np.arange(start, stop)
    first, last = np.maximum(rows - half, 0), np.minimum(rows + half, n - 1)
    ahead = np.searchsorted(keys, codes[rows] * n + first, side="left")
    upto = np.searchsorted(keys, codes[rows] * n + last, side="right")
    return ((upto - ahead) / (last - first + 1)).astype(np.float32)


def chunk_source(files: Sequence[str], spec: ModelSpec, prior: ItemPrior,
                 tc: TrainConfig) -> Callable[[int, int], Callable[[], Iterator[Chunk]]]:
    """``(worker, workers) -> generator factory`` over ``files``, batching as ``tc.batching`` says (for ``fit``)."""
    def make(worker: int, workers: int) -> Callable[[], Iterator[Chunk]]:
        if tc.batching == "time_local":
            return time_local_chunks(files, spec, window=tc.sampling_window, worker=worker, workers=workers,
                                     label_types=list(tc.label_types), max_skip=tc.batch_size, seed=tc.seed)
        return training_chunks(files, spec, prior, worker=worker, workers=workers,
                               label_types=list(tc.label_types), seed=tc.seed)

    return make


def training_dataset(generate: Callable[[], Iterator[Chunk]], spec: ModelSpec, batch_size: int, *,
                     shuffle_buffer: int, seed: int, repeat: bool = False,
                     featurize: Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]] | None = None,
                     cache: str | None = None, time_local: bool = False) -> tf.data.Dataset:
    """Unbatch, shuffle, batch (dropping the remainder: in-batch negatives need full batches) and prefetch.

    Args:
        featurize: Applied to each batch (the model's id lookups), so training steps see numbers only.
        cache: Keep the featurized batches after the first pass: ``""`` in memory, a path prefix on disk,
            None to re-read the Parquet files every epoch. Later passes reshuffle the order of the
            batches (as TFRS's tutorials do, the rows of a batch stay together).
        time_local: The rows come in time order (:func:`time_local_chunks`): batches are cut from
            consecutive rows and only their order is shuffled, on every pass.

    """
    signature = {**input_signature(spec, "query"), **input_signature(spec, "candidate"),
                 "item_prob": tf.TensorSpec([None], tf.float32)}
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature).unbatch()
    if not time_local:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    if featurize is not None:
        ds = ds.map(featurize, num_parallel_calls=tf.data.AUTOTUNE)
    if cache is not None:
        ds = ds.cache(cache)
    if cache is not None or time_local:
        ds = ds.shuffle(_BATCH_SHUFFLE, seed=seed, reshuffle_each_iteration=True)
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
