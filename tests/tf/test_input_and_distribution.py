"""Input pipeline (sharding, filtering, padding) and a two-process multi-worker run on loopback."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.tf

pytest.importorskip("tensorflow", reason="TensorFlow is not installed")

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, n: int) -> str:
    from tests.tf.helpers import rows

    path = tmp_path / "part-0.parquet"
    pq.write_table(rows(n), path, row_group_size=50)
    return str(path)


def test_padding_truncates_and_fills():
    from recsys_lib.models.data import padded, padded_weights

    lists = pa.array([["a", "b", "c", "d"], [], None, ["x"]])
    assert padded(lists, 3).tolist() == [["a", "b", "c"], ["", "", ""], ["", "", ""], ["x", "", ""]]
    cats = pa.array([[{"category_id": "c1", "weight": 2.0}], None], pa.list_(pa.struct(
        [("category_id", pa.string()), ("weight", pa.float64())])))
    ids, weights = padded_weights(cats, 2)
    assert ids.tolist() == [["c1", ""], ["", ""]]
    assert weights.tolist() == [[2.0, 0.0], [0.0, 0.0]]


def test_shards_are_disjoint_and_cover_every_selected_row(tmp_path):
    from recsys_lib.models.data import ItemPrior, training_chunks
    from tests.tf.helpers import rows, tiny_spec

    path = _write(tmp_path, 300)
    spec = tiny_spec()
    prior = ItemPrior.from_counts({"i0": 3, "i1": 1})
    expected = rows(300).filter(pa.compute.is_in(rows(300).column("label_type"), pa.array(["click", "purchase"])))

    def keys(worker: int, workers: int) -> list[tuple[str, str, float]]:
        gen = training_chunks([path], spec, prior, worker=worker, workers=workers, batch_rows=64,
                              label_types=["click", "purchase"], mask_label_item=False)
        out = []
        for chunk in gen():
            out += list(zip(chunk["user_id"], chunk["item_id"], chunk["price"], strict=True))
            assert chunk["recent_items"].shape[1] == spec.recent_len
        return out

    a, b = keys(0, 2), keys(1, 2)
    assert abs(len(a) - len(b)) <= 1
    whole = sorted(zip(expected.column("user_id").to_pylist(), expected.column("item_id").to_pylist(),
                       [p if p is not None else -1.0 for p in expected.column("price").to_pylist()], strict=True))
    assert sorted(a + b) == whole


def test_label_item_is_masked_out_of_recent_items(tmp_path):
    from recsys_lib.models.data import ItemPrior, training_chunks
    from tests.tf.helpers import tiny_spec

    path = _write(tmp_path, 200)
    gen = training_chunks([path], tiny_spec(), ItemPrior.from_counts({"i0": 1}))
    for chunk in gen():
        assert not (chunk["recent_items"] == chunk["item_id"][:, None]).any()


def _day_file(folder: Path, day: str, stamps: list[str], items: list[str], labels: list[str]) -> str:
    from datetime import datetime

    from tests.tf.helpers import rows

    n = len(items)
    table = rows(n).drop_columns(["item_id", "label_type"])
    table = table.append_column("item_id", pa.array(items)).append_column("label_type", pa.array(labels))
    table = table.append_column("event_ts", pa.array([datetime.fromisoformat(f"{day}T{s}") for s in stamps],
                                                     pa.timestamp("us")))
    path = folder / f"label_date={day}" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)
    return str(path)


def test_time_local_blocks_are_in_time_order_with_window_shares(tmp_path):
    from recsys_lib.models.data import time_local_chunks
    from tests.tf.helpers import tiny_spec

    # written out of order, and the later day's file listed first
    day2 = _day_file(tmp_path, "2024-01-02", ["07:00", "06:00", "05:00"], ["i2", "i0", "i7"],
                     ["click", "purchase", "view"])
    day1 = _day_file(tmp_path, "2024-01-01", ["10:00", "08:00", "09:00"], ["i0", "i1", "i0"],
                     ["click", "click", "purchase"])

    def blocks(worker: int, workers: int) -> list[tuple[list[str], list[float]]]:
        gen = time_local_chunks([day2, day1], tiny_spec(), window=5, worker=worker, workers=workers,
                                label_types=["click", "purchase"], mask_label_item=False)
        return [(c["item_id"].tolist(), c["item_prob"].tolist()) for c in gen()]

    # stream: i1 (day 1 08:00), i0 (09:00), i0 (10:00), i0 (day 2 06:00), i2 (07:00); the view is skipped.
    # Windows of 5 rows centred on each row, clipped at the ends: [i1 i0 i0] -> i1 1/3, [i1 i0 i0 i0] -> 3/4,
    # all five -> 3/5, [i0 i0 i0 i2] -> 3/4, [i0 i0 i2] -> i2 1/3; blocks of 2 rows
    blocks_ = [(["i1", "i0"], pytest.approx([1 / 3, 3 / 4])), (["i0", "i0"], pytest.approx([3 / 5, 3 / 4])),
               (["i2"], pytest.approx([1 / 3]))]
    assert blocks(0, 1) == blocks_
    assert blocks(0, 2) == [blocks_[0], blocks_[2]]
    assert blocks(1, 2) == [blocks_[1]]
    with pytest.raises(ValueError, match="sampling_window"):
        time_local_chunks([day1], tiny_spec(), window=0)


def _naive_shares(items: list[str], half: int) -> list[float]:
    n = len(items)
    out = []
    for r in range(n):
        window = items[max(r - half, 0):min(r + half, n - 1) + 1]
        out.append(window.count(items[r]) / len(window))
    return out


@pytest.mark.parametrize("window", [1, 2, 6, 13, 100])
def test_time_local_shares_match_a_direct_count_across_days_and_blocks(tmp_path, window):
    from recsys_lib.models.data import time_local_chunks
    from tests.tf.helpers import ITEMS, tiny_spec

    rng = np.random.default_rng(window)
    sizes = [1, 17, 0, 5, 30]
    files, stream = [], []
    for d, n in enumerate(sizes, start=1):
        if n == 0:
            continue
        items = [ITEMS[k] for k in rng.integers(0, 3, n)]  # few items, so the shares vary
        stamps = [f"{h:02d}:{m:02d}" for h, m in zip(rng.integers(0, 24, n), rng.integers(0, 60, n), strict=True)]
        files.append(_day_file(tmp_path, f"2024-01-{d:02d}", stamps, items, ["click"] * n))
        stream += [i for _, i in sorted(zip(stamps, items, strict=True), key=lambda x: x[0])]
    chunks = list(time_local_chunks(files, tiny_spec(), window=window, mask_label_item=False)())
    got_items = [i for c in chunks for i in c["item_id"].tolist()]
    got = [p for c in chunks for p in c["item_prob"].tolist()]
    assert all(len(c["item_id"]) <= max(window // 2, 1) for c in chunks)
    assert got_items == stream
    assert got == pytest.approx(_naive_shares(stream, max(window // 2, 1)))


def test_time_local_dataset_keeps_consecutive_rows_together():
    from recsys_lib.models.data import candidate_chunk, query_chunk, training_dataset
    from tests.tf.helpers import rows, tiny_spec

    spec = tiny_spec()
    table = rows(8).drop_columns(["item_id"]).append_column("item_id", pa.array([f"i{i}" for i in range(8)]))

    def generate():
        chunk = query_chunk(table, spec) | candidate_chunk(table, spec)
        chunk["item_prob"] = np.full(8, 0.125, np.float32)
        yield chunk

    ds = training_dataset(generate, spec, 2, shuffle_buffer=100, seed=3, time_local=True)
    batches = [tuple(x.decode() for x in b["item_id"].numpy()) for b in ds]
    assert sorted(batches) == [("i0", "i1"), ("i2", "i3"), ("i4", "i5"), ("i6", "i7")]


def test_fit_trains_on_time_local_batches(tmp_path):
    from recsys_lib.core.config import TrainConfig
    from recsys_lib.models.data import ItemPrior, chunk_source
    from recsys_lib.models.trainer import fit
    from tests.tf.helpers import ITEMS, tiny_spec

    files = [_day_file(tmp_path, f"2024-01-0{d}", [f"{h:02d}:00" for h in range(20)],
                       [ITEMS[(d * h) % len(ITEMS)] for h in range(20)], ["click"] * 20) for d in (1, 2, 3)]
    tc = TrainConfig(batching="time_local", sampling_window=16, batch_size=8, epochs=2)
    result = fit(tiny_spec(), chunk_source(files, tiny_spec(), ItemPrior.from_counts({}), tc), 60, tc)
    assert [math.isfinite(e["loss"]) for e in result.epochs] == [True, True]
    assert result.examples == 2 * (60 // 8) * 8


def test_item_prior_probabilities():
    from recsys_lib.models.data import ItemPrior

    prior = ItemPrior.from_counts({"a": 3, "b": 1})
    assert prior.lookup(np.array(["a", "b", "zzz"], dtype=object)).tolist() == pytest.approx([0.75, 0.25, 0.125])


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_multi_worker_training_on_two_local_processes(tmp_path):
    data = _write(tmp_path, 600)
    ports = ",".join(map(str, _free_ports(2)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.tf.multiworker_worker", str(i), ports, data,
                               str(tmp_path / f"w{i}.json")], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    results = [json.loads((tmp_path / f"w{i}.json").read_text()) for i in range(2)]
    assert [r["position"] for r in results] == [[0, 2], [1, 2]]
    # synchronous all-reduce: both workers end with the same variables
    assert results[0]["checksum"] == pytest.approx(results[1]["checksum"], rel=1e-6)
    assert all(np.isfinite(r["loss"]) for r in results)
    # each worker read only its shard: about half the rows per pass
    assert all(r["rows_read"] < 600 * 2 for r in results)
