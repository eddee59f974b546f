"""Pseudonym cost: what hashing user ids (HMAC-SHA256, recsys_lib.core.privacy) adds per id.

* ``python``: one id at a time, as the API does per request (``Pseudonyms.of``);
* ``arrow``: a micro-batch's column on the driver, each distinct id hashed once (``Pseudonyms.arrow``);
* ``spark``: the batch ingest's expression (``Pseudonyms.column``, no UDF) over --rows ids, against the same
  job without it.

Writes bench/results/privacy.json.
"""

from __future__ import annotations

import statistics
import time

import pyarrow as pa
from _common import base_parser, write_result

from recsys_lib.core.privacy import Pseudonyms

KEY = b"bench-key-0123456789-0123456789-0123456789"


def per_id_python(ids: list[str], repeats: int = 5) -> float:
    """Median microseconds per id of ``Pseudonyms.of``."""
    pseudonyms = Pseudonyms(KEY)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in ids:
            pseudonyms.of(i)
        runs.append((time.perf_counter() - t0) / len(ids) * 1e6)
    return round(statistics.median(runs), 3)


def per_batch_arrow(ids: list[str], distinct: int, repeats: int = 5) -> dict[str, float]:
    """Milliseconds for a micro-batch column of ``len(ids)`` ids with ``distinct`` users."""
    column = pa.array([ids[n % distinct] for n in range(len(ids))])
    pseudonyms = Pseudonyms(KEY)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pseudonyms.arrow(column)
        runs.append((time.perf_counter() - t0) * 1e3)
    return {"rows": len(ids), "distinct": distinct, "ms": round(statistics.median(runs), 2)}


def spark_overhead(rows: int, master: str) -> dict[str, float]:
    """Seconds to hash ``rows`` ids in Spark, against the same job that only copies them."""
    from pyspark.sql import functions as F

    from recsys_lib.core.config import SparkConfig
    from recsys_lib.core.spark import build_spark

    spark = build_spark(SparkConfig(master=master, shuffle_partitions=4, log_level="ERROR"))
    try:
        df = spark.range(rows).select(F.concat(F.lit("user-"), F.col("id").cast("string")).alias("user_id")).cache()
        df.count()
        timings = {}
        for name, column in (("copy", F.col("user_id")), ("hashed", Pseudonyms(KEY).column(F.col("user_id")))):
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                df.select(F.max(column)).collect()
                runs.append(time.perf_counter() - t0)
            timings[name] = round(statistics.median(runs), 3)
        return {"rows": rows, **timings, "ns_per_id": round((timings["hashed"] - timings["copy"]) / rows * 1e9, 1)}
    finally:
        spark.stop()


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], "privacy.json", sizes=False)
    parser.add_argument("--ids", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=5_000_000)
    args = parser.parse_args()
    ids = [f"user-{n}@shop.example" for n in range(args.ids)]
    result = {"python_us_per_id": per_id_python(ids),
              "arrow_batch": per_batch_arrow(ids[:2000], distinct=500),
              "spark": spark_overhead(args.rows, args.master)}
    print(result)
    write_result(args.out, "privacy", args.master, **result)


if __name__ == "__main__":
    main()
