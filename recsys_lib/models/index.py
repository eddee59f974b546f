"""Nearest-neighbour indexes over item embeddings (maximum inner product).

``brute_force`` is exact (one matrix product per query block). ``scann`` is
ScaNN's tree + asymmetric hashing searcher with exact re-ranking. ``auto`` picks
ScaNN from ``serve.scann_min_items`` (10,000) items up. bench/index.py on 2 cores:
at 1,000 items ScaNN (no tree) reached only 0.91 recall@100 while brute force is
exact at 6,300 queries/s; from 10,000 items ScaNN kept recall@100 >= 0.99 at 25 to
140 times brute force's throughput.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from recsys_lib.models.metrics import top_k


class Index(Protocol):
    """Top-k search over a fixed set of item embeddings."""

    kind: str

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(item indices, scores), each (queries x k), best first."""
        ...

    def save(self, folder: Path) -> None:
        """Write the index into ``folder``."""
        ...


class BruteForceIndex:
    """Exact inner-product search."""

    kind = "brute_force"

    def __init__(self, embeddings: np.ndarray) -> None:
        self.embeddings = np.asarray(embeddings, dtype=np.float32)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = np.asarray(queries, dtype=np.float32) @ self.embeddings.T
        idx = top_k(scores, k)
        return idx, np.take_along_axis(scores, idx, axis=1)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "embeddings.npy", self.embeddings)
        (folder / "index.json").write_text(json.dumps({"kind": self.kind}))


class ScannIndex:
    """ScaNN searcher (tree partitioning, asymmetric hashing, exact re-ranking)."""

    kind = "scann"

    def __init__(self, embeddings: np.ndarray, *, searcher: Any = None, k: int = 100) -> None:
        import scann

        self.embeddings = np.asarray(embeddings, dtype=np.float32)
        if searcher is None:
            n = len(self.embeddings)
            leaves = max(1, min(2000, int(np.sqrt(n))))
            builder = scann.scann_ops_pybind.builder(self.embeddings, k, "dot_product")
            if n >= 1000:
                builder = builder.tree(num_leaves=leaves, num_leaves_to_search=max(1, leaves // 5),
                                       training_sample_size=min(n, 250_000))
            searcher = builder.score_ah(2, anisotropic_quantization_threshold=0.2).reorder(max(4 * k, 200)).build()
        self.searcher: Any = searcher

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        idx, scores = self.searcher.search_batched(np.asarray(queries, dtype=np.float32),
                                                   final_num_neighbors=k)
        return np.asarray(idx, dtype=np.int64), np.asarray(scores)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "embeddings.npy", self.embeddings)
        scann_dir = folder / "scann"
        scann_dir.mkdir(exist_ok=True)
        self.searcher.serialize(str(scann_dir))
        (folder / "index.json").write_text(json.dumps({"kind": self.kind}))


def build_index(embeddings: np.ndarray, kind: str = "auto", scann_min_items: int = 10_000) -> Index:
    """An index of ``kind`` (``auto``, ``brute_force`` or ``scann``) over ``embeddings``."""
    if kind == "auto":
        kind = "scann" if len(embeddings) >= scann_min_items else "brute_force"
    if kind == "brute_force":
        return BruteForceIndex(embeddings)
    if kind == "scann":
        return ScannIndex(embeddings)
    raise ValueError(f"serve.index: unknown index kind {kind!r}; expected auto, brute_force or scann")


def load_index(folder: Path) -> Index:
    """Read an index written by ``save``."""
    kind = json.loads((folder / "index.json").read_text())["kind"]
    embeddings = np.load(folder / "embeddings.npy")
    if kind == "scann":
        import scann

        return ScannIndex(embeddings, searcher=scann.scann_ops_pybind.load_searcher(str(folder / "scann")))
    return BruteForceIndex(embeddings)


def recall_against_exact(index: Index, embeddings: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Share of the exact top-k that ``index`` returns, averaged over ``queries``."""
    exact, _ = BruteForceIndex(embeddings).search(queries, k)
    approx, _ = index.search(queries, k)
    return float(np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact, strict=True)]))
