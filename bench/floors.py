"""Floors: how long the unavoidable parts of ingest and the full refresh take in Spark alone.

Each step runs to Spark's ``noop`` sink (computed, nothing written or committed),
twice in one process: ``first`` pays the JVM's warm-up, ``warm`` does not. Set
against the 300k events/s targets (33.3 s at 10M), they show how much of the
budget Spark's reading, JSON parsing and folding use before any deduplication,
Parquet writing or Delta commit; one more step writes the events as Spark's
partitioned Parquet files (scan included, no commit). For the refresh, a lower
bound no design escapes: one aggregation per table's key with only counts and the
latest time; and each feature family the refresh must compute (decayed counts, the
item's latest values, the distinct-users sketch, recent items, the user's roll-up
and category weights), alone, in the form the refresh computes it.
Needs bench/work from `make bench` and `make bench-features`. Writes
bench/results/floors.json.

    python bench/floors.py --sizes 10000000 [--master local[2]] [--steps refresh_]
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

from recsys_lib.core.config import RecsysConfig, load_config
from recsys_lib.core.schema import CORRUPT_COLUMN, EVENT_TYPES, EVENTS_TABLE, RAW_RECORD_SCHEMA
from recsys_lib.features import ITEM, USER, USER_CATEGORY, Entity, entities, fold
from recsys_lib.features.decay import decayed_sums, event_bounds
from recsys_lib.features.definitions import seconds
from recsys_lib.features.fold import fold_columns
from recsys_lib.features.user_parts import category_weights_from_states, recent_items, user_sums_from_categories
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


def _families(events: DataFrame, states: DataFrame, cfg: RecsysConfig,
              span: tuple[float, float]) -> dict[str, Callable[[], DataFrame]]:
    """Each feature family of the refresh alone, built from the fold's own definitions (single-pass span)."""
    fc = cfg.features
    known = entities(fc)
    ev = events.withColumn("_ts", seconds(F.col("event_ts")))
    items = ev.where(F.col("item_id").isNotNull())
    terms, carried, apart = fold_columns(known[ITEM], fc)
    shortest = min(fc.half_lives)
    return {
        "refresh_family_item_counts_and_decay": lambda: decayed_sums(items, ["item_id"], terms, shortest,
                                                                     carried=carried, span=span),
        "refresh_family_item_latest_values": lambda: items.groupBy("item_id").agg(apart["latest_category"],
                                                                                  apart["latest_price"]),
        "refresh_family_item_users_sketch": lambda: items.groupBy("item_id").agg(apart["users_hll"]),
        "refresh_family_user_category_counts_and_decay": lambda: fold(events, known[USER_CATEGORY], fc,
                                                                      large_input=True, span=span),
        "refresh_family_user_recent_items": lambda: recent_items(ev, fc, cutoff=True, span=span),
        "refresh_family_user_rollup": lambda: user_sums_from_categories(ev, states, terms, span[1]),
        "refresh_family_user_category_weights": lambda: category_weights_from_states(states, fc)
        .groupBy("user_id").agg(F.map_from_entries(F.collect_list(F.struct("category_id", "w")))),
    }


def _floors(raw_dir: Path, home: Path, master: str, prefixes: list[str]) -> dict[str, dict[str, float]]:
    """The seconds of every step whose name starts with one of ``prefixes``, in one fresh Spark application."""
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
        if span is not None:
            steps.update(_families(events, states, cfg, span))
        chosen = [name for name in steps if name.startswith(tuple(prefixes))]
        timings = {name: _timed(steps[name]) for name in chosen}
        write_step = "ingest_write_events_parquet_incl_scan"
        if write_step.startswith(tuple(prefixes)):
            # what ingest must at least write: the events, as Spark's partitioned Parquet files (no commit)
            with tempfile.TemporaryDirectory(dir=home) as scratch:
                timings[write_step] = _timed(lambda: events, Path(scratch))
        return timings
    finally:
        ctx.stop()


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], "floors.json")
    parser.set_defaults(sizes=[10_000_000])
    parser.add_argument("--steps", nargs="+", default=["ingest_", "refresh_"],
                        help="run only the steps whose names start with these prefixes (default: all)")
    args = parser.parse_args()
    work = Path(args.work)
    results = []
    for size in args.sizes:
        raw_dir, home = work / f"raw-{size}", work / f"features-home-{size}"
        if not (raw_dir / "_manifest.json").exists() or not (home / "lake" / EVENTS_TABLE / "_delta_log").exists():
            raise SystemExit(f"{raw_dir} or {home} is missing: run `make bench` and `make bench-features` first")
        seconds = _floors(raw_dir, home, args.master, args.steps)
        budget = round(size / TARGET, 1)
        result: dict[str, object] = {
            "events": size, "input_lines": json.loads((raw_dir / "_manifest.json").read_text())["lines"],
            "budget_seconds_at_target": budget, "steps": args.steps, "seconds": seconds}
        result.update(_shares(seconds, budget))
        results.append(result)
        print(json.dumps(results[-1]), flush=True)
    write_result(args.out, "floors", args.master, target_events_per_second=TARGET, results=results)


def _warm(seconds: dict[str, dict[str, float]], prefix: str) -> float | None:
    """The warm seconds of the steps named ``prefix``..., summed (None if none ran)."""
    found = [v["warm"] for k, v in seconds.items() if k.startswith(prefix)]
    return round(sum(found), 2) if found else None


def _shares(seconds: dict[str, dict[str, float]], budget: float) -> dict[str, float]:
    """Warm totals of the step groups that ran, and their shares of the budget."""
    out: dict[str, float] = {}
    if {"ingest_read_parse_validate", "ingest_write_events_parquet_incl_scan", "refresh_scan_events"} <= set(seconds):
        parse = seconds["ingest_read_parse_validate"]["warm"]
        write = seconds["ingest_write_events_parquet_incl_scan"]["warm"] - seconds["refresh_scan_events"]["warm"]
        out["ingest_parse_validate_warm_share_of_budget"] = round(parse / budget, 2)
        out["ingest_write_events_warm_seconds_less_scan"] = round(write, 2)
        out["ingest_parse_validate_write_warm_share_of_budget"] = round((parse + write) / budget, 2)
    for prefix, label in (("refresh_fold_", "refresh_three_folds"), ("refresh_least_", "refresh_least_groupbys"),
                          ("refresh_family_", "refresh_families")):
        total = _warm(seconds, prefix)
        if total is not None:
            out[f"{label}_warm_seconds"] = total
            out[f"{label}_warm_share_of_budget"] = round(total / budget, 2)
    return out


if __name__ == "__main__":
    main()
