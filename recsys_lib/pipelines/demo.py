"""The end-to-end demo on the embedded default: generate, ingest, summarise."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from recsys_lib.core.config import RecsysConfig
from recsys_lib.datagen.synthetic import GeneratorSpec
from recsys_lib.pipelines.context import start
from recsys_lib.pipelines.data import run_generate
from recsys_lib.pipelines.ingest import IngestSummary, format_summary, run_ingest


def run_demo(cfg: RecsysConfig, *, events: int = 200_000, seed: int = 7,
             say: Callable[[str], None] = print) -> IngestSummary:
    """Generate a sample into the landing folder, ingest it and print the summary."""
    t0 = time.monotonic()
    landing = Path(cfg.landing_dir) / "demo"
    say(f"[1/3] generating {events:,} synthetic events (plus duplicates and bad records) into {landing}")
    spec = GeneratorSpec(users=3_000, items=1_500, days=14, events=events, seed=seed)
    manifest = run_generate(spec, landing)
    say(f"      wrote {manifest.lines:,} lines in {manifest.files} files: {manifest.valid_events:,} events, "
        f"{manifest.duplicates:,} duplicates, {manifest.bad:,} bad records, {manifest.late_events:,} late")
    say("[2/3] starting Spark and ingesting into the events Delta table")
    ctx = start(cfg)
    try:
        summary = run_ingest(ctx.spark, ctx.lake, cfg, str(landing))
        say("[3/3] ingest summary")
        say(format_summary(summary))
        say(f"\nData root: {cfg.home_dir}")
        say(f"  events table:     {cfg.table_uri('events')}")
        say(f"  quarantine table: {cfg.table_uri('events_quarantine')}")
        say("  inspect: recsys lake history events | recsys lake show events_quarantine")
        say(f"Demo finished in {time.monotonic() - t0:.0f}s.")
    finally:
        ctx.stop()
    return summary
