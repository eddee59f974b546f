"""The end-to-end demo on the embedded default: generate, ingest, features, training data."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pyspark.sql import functions as F

from recsys_lib.core.config import RecsysConfig
from recsys_lib.datagen.synthetic import GeneratorSpec
from recsys_lib.features import load_features
from recsys_lib.pipelines.context import start
from recsys_lib.pipelines.data import run_generate
from recsys_lib.pipelines.features import format_refresh, run_refresh
from recsys_lib.pipelines.ingest import IngestSummary, format_summary, run_ingest
from recsys_lib.pipelines.training import run_training_set


def run_demo(cfg: RecsysConfig, *, events: int = 200_000, seed: int = 7,
             say: Callable[[str], None] = print) -> IngestSummary:
    """Generate a sample into the landing folder, ingest it and print the summary."""
    t0 = time.monotonic()
    landing = Path(cfg.landing_dir) / "demo"
    say(f"[1/5] generating {events:,} synthetic events (plus duplicates and bad records) into {landing}")
    spec = GeneratorSpec(users=3_000, items=1_500, days=14, events=events, seed=seed)
    manifest = run_generate(spec, landing)
    say(f"      wrote {manifest.lines:,} lines in {manifest.files} files: {manifest.valid_events:,} events, "
        f"{manifest.duplicates:,} duplicates, {manifest.bad:,} bad records, {manifest.late_events:,} late")
    say("[2/5] starting Spark and ingesting into the events Delta table")
    ctx = start(cfg)
    try:
        summary = run_ingest(ctx.spark, ctx.lake, cfg, str(landing))
        say(format_summary(summary))
        say("[3/5] full refresh of the feature tables")
        refreshed = run_refresh(ctx.spark, ctx.lake, cfg)
        say(format_refresh(refreshed))
        say("[4/5] point-in-time training set (purchase, add_to_cart, click labels)")
        built = run_training_set(ctx.spark, ctx.lake, cfg, ["purchase", "add_to_cart", "click"])
        say(f"      {built['rows']:,} rows in training_examples version {built['version']}")
        say(f"[5/5] the three most active users' features as of the data's watermark ({refreshed.watermark})")
        at = datetime.fromisoformat(refreshed.watermark) if refreshed.watermark else None
        users = load_features(ctx.spark, "user", at, cfg=cfg).orderBy(F.desc("view_count")).limit(3)
        users.select("user_id", "view_count", "purchase_count", "view_decayed_1d", "ctr", "recent_item_ids",
                     "top_categories").show(truncate=60)
        say(f"\nData root: {cfg.home_dir}")
        say(f"  events table:     {cfg.table_uri('events')}")
        say(f"  quarantine table: {cfg.table_uri('events_quarantine')}")
        say("  feature tables:   user_features, item_features, user_category_features (same folder)")
        say("  inspect: recsys lake history events | recsys lake show events_quarantine | recsys stream-status")
        say(f"Demo finished in {time.monotonic() - t0:.0f}s.")
    finally:
        ctx.stop()
    return summary
