"""Floors: how long the unavoidable parts of ingest and the full refresh take in Spark alone.

Each step runs to Spark's ``noop`` sink (computed, nothing written or committed),
twice in one process: ``first`` pays the JVM's warm-up, ``warm`` does not. Set
against the 300k events/s targets (33.3 s at 10M), they show how much of the
budget Spark's reading, JSON parsing and folding use before any deduplication,
Parquet writing or Delta commit; one more step writes the events as Spark's
partitioned Parquet files (scan included, no commit). For the refresh, a lower
bound no design escapes: one aggregation per table's key with only counts and the
latest time.
Needs bench/work from `make bench` and `make bench-features`. Writes
bench/results/floors.json.

    python bench/floors.py --sizes 10000000 [--master local[2]]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from recsys_lib.core.config import load_config
from recsys_lib.core.schema import CORRUPT_COLUMN, EVENT_TYPES, EVENTS_TABLE, RAW_RECORD_SCHEMA
from recsys_lib.features import USER, USER_CATEGORY, Entity, entities, fold
from recsys_lib.features.decay import event_bounds
from recsys_lib.ingest.validate import classify, read_raw
from recsys_lib.pipelines.context import start

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_parser, write_result  # noqa: E402 - sibling helper module

TARGET = 300_000


def _timed(build: Callable[[], DataFrame], parquet_to: Path | None = None) -> dict[str, float]:
    """Seconds to run ``build()`` to the noop sink (or to Parquet files by event date), first and second time."""
    out = {}
    for run in ("first", "warm"):
        t0 = time.monotonic()
        if parquet_to is None:
            build().write.format("noop").mode("overwrite").save()
        else:
            build().write.mode("overwrite").partitionBy("event_date").parquet(str(parquet_to / run))
        out[run] = round(time.monotonic() - t0, 2)
    return out


def _floors(raw_dir: Path, home: Path, master: str) -> dict[str, dict[str, float]]:
    """Every step's seconds, in one fresh Spark application."""
    cfg = load_config(overrides=[f"home={home}", f"spark.master={master}"])
    ctx = start(cfg)
    try:
        ic = cfg.ingest
        raw = read_raw(ctx.spark, str(raw_dir))
        parsed = F.from_json("value", RAW_RECORD_SCHEMA, {"mode": "PERMISSIVE",
                                                          "columnNameOfCorruptRecord": CORRUPT_COLUMN})
        now = datetime.now(UTC)
        events = ctx.lake.read(EVENTS_TABLE)
        steps: dict[str, Callable[[], DataFrame]] = {
            "ingest_read_lines": lambda: raw,
            "ingest_read_and_parse_json": lambda: raw.select(parsed.alias("_j")).select("_j.*"),
            "ingest_read_parse_validate": lambda: classify(
                raw, max_line_bytes=ic.max_line_bytes, max_future_skew_s=ic.max_future_skew, now=now,
                allowed_lateness_s=ic.allowed_lateness),
            "refresh_scan_events": lambda: events,
        }

        # as in the refresh, the user table's category weights come from the stored user x category states
        states = ctx.lake.read(entities(cfg.features)[USER_CATEGORY].table)

        _, span = event_bounds(events)

        def folded(entity: Entity) -> Callable[[], DataFrame]:
            return lambda: fold(events, entity, cfg.features, large_input=True, span=span,
                                category_states=states if entity.name == USER else None)

        def least(keys: list[str], *aggs: Column) -> Callable[[], DataFrame]:
            return lambda: events.groupBy(*keys).agg(*aggs)

        # a lower bound for any design: one hash aggregation per table's key with only its
        # counts and latest time (no decay, no sketch, no sequence). (The (user, item) latest
        # times over all events are no part of it: the refresh finds most users' recent
        # items without them, see features.user_parts._since_nth_newest_item.)
        least_aggs = [F.max("event_ts"), *[F.count_if(F.col("event_type") == t) for t in EVENT_TYPES]]
        for name, entity in entities(cfg.features).items():
            steps[f"refresh_fold_{name}"] = folded(entity)
            steps[f"refresh_least_{name}"] = least(list(entity.keys), *least_aggs)
        seconds = {name: _timed(build) for name, build in steps.items()}
        # what ingest must at least write: the events, as Spark's partitioned Parquet files (no commit)
        with tempfile.TemporaryDirectory(dir=home) as scratch:
            seconds["ingest_write_events_parquet_incl_scan"] = _timed(lambda: events, Path(scratch))
        return seconds
    finally:
        ctx.stop()


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], "floors.json")
    parser.set_defaults(sizes=[10_000_000])
    args = parser.parse_args()
    work = Path(args.work)
    results = []
    for size in args.sizes:
        raw_dir, home = work / f"raw-{size}", work / f"features-home-{size}"
        if not (raw_dir / "_manifest.json").exists() or not (home / "lake" / EVENTS_TABLE / "_delta_log").exists():
            raise SystemExit(f"{raw_dir} or {home} is missing: run `make bench` and `make bench-features` first")
        seconds = _floors(raw_dir, home, args.master)
        budget = round(size / TARGET, 1)
        parse = seconds["ingest_read_parse_validate"]["warm"]
        write = seconds["ingest_write_events_parquet_incl_scan"]["warm"] - seconds["refresh_scan_events"]["warm"]
        folds = sum(v["warm"] for k, v in seconds.items() if k.startswith("refresh_fold_"))
        least = sum(v["warm"] for k, v in seconds.items() if k.startswith("refresh_least_"))
        results.append({
            "events": size, "input_lines": json.loads((raw_dir / "_manifest.json").read_text())["lines"],
            "budget_seconds_at_target": budget, "seconds": seconds,
            "ingest_parse_validate_warm_share_of_budget": round(parse / budget, 2),
            "ingest_write_events_warm_seconds_less_scan": round(write, 2),
            "ingest_parse_validate_write_warm_share_of_budget": round((parse + write) / budget, 2),
            "refresh_three_folds_warm_seconds": round(folds, 2),
            "refresh_three_folds_warm_share_of_budget": round(folds / budget, 2),
            "refresh_least_groupbys_warm_seconds": round(least, 2),
            "refresh_least_groupbys_warm_share_of_budget": round(least / budget, 2),
        })
        print(json.dumps(results[-1]), flush=True)
    write_result(args.out, "floors", args.master, target_events_per_second=TARGET, results=results)


if __name__ == "__main__":
    main()
