"""ANN index choice: brute force versus ScaNN by catalogue size (writes bench/results/index.json).

Embeddings are clustered random vectors of the model's output width; queries are
drawn the same way. For each size: build time, query throughput at K=100 and
recall@100 against exact search. The ``serve.index: auto`` threshold
(``serve.scann_min_items``) comes from where ScaNN starts to win at recall >= 0.95.

    python bench/index.py --sizes 1000 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from recsys_lib.models.index import BruteForceIndex, build_index, recall_against_exact

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Run the benchmark and write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=34, help="embedding width (32 + bias + 1, like the model)")
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "index.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = []
    for n in args.sizes:
        centres = rng.normal(size=(max(10, n // 200), args.dim))
        items = (centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, args.dim))).astype(np.float32)
        queries = (centres[rng.integers(0, len(centres), args.queries)]
                   + 0.5 * rng.normal(size=(args.queries, args.dim))).astype(np.float32)
        row: dict[str, object] = {"items": n}
        for kind in ("brute_force", "scann"):
            t = time.perf_counter()
            index = build_index(items, kind)
            built = time.perf_counter() - t
            t = time.perf_counter()
            index.search(queries, 100)
            searched = time.perf_counter() - t
            recall = 1.0 if isinstance(index, BruteForceIndex) else recall_against_exact(index, items, queries, 100)
            row[kind] = {"build_seconds": round(built, 3), "queries_per_second": round(args.queries / searched, 1),
                         "recall_at_100": round(recall, 4)}
            print(n, kind, row[kind], flush=True)
        results.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"benchmark": "index", "dim": args.dim, "k": 100, "queries": args.queries,
                                          "machine": {"cpus": __import__("os").cpu_count(),
                                                      "python": platform.python_version()},
                                          "results": results}, indent=2))


if __name__ == "__main__":
    main()
