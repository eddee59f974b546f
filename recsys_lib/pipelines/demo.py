"""The end-to-end demo on the embedded default: generate, ingest, features, training data."""

from __future__ import annotations

import time
from collections.abc import Callable
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


def prepare_sample(cfg: RecsysConfig, *, events: int = 50_000, users: int = 1_000, items: int = 500, days: int = 10,
                   seed: int = 7, training_set: bool = True, say: Callable[[str], None] = print) -> None:
    """Generate, ingest and full-refresh a sample under ``cfg.home_dir`` unless its ``events`` table exists.

    Notebooks and tutorials start from this; it is a no-op on a data root that already has events.
    """
    from recsys_lib.lake import TableNotFound
    from recsys_lib.lake.snapshot import snapshot

    try:  # a table that exists but cannot be read (a corrupt log) fails here, naming the table
        snapshot(cfg.table_uri("events"))
        say(f"using the existing data under {cfg.home_dir}")
        return
    except TableNotFound:
        pass  # no table yet: make the sample
    landing = Path(cfg.landing_dir) / "sample"
    manifest = run_generate(GeneratorSpec(users=users, items=items, days=days, events=events, seed=seed), landing)
    say(f"generated {manifest.valid_events:,} events into {landing}")
    ctx = start(cfg)
    try:
        say(format_summary(run_ingest(ctx.spark, ctx.lake, cfg, str(landing))))
        say(format_refresh(run_refresh(ctx.spark, ctx.lake, cfg)))
        if training_set:
            built = run_training_set(ctx.spark, ctx.lake, cfg, list(cfg.train.label_types))
            say(f"training set: {built['rows']:,} rows")
    finally:
        ctx.stop()


def run_demo(cfg: RecsysConfig, *, events: int = 200_000, seed: int = 7, stream_seconds: float = 60.0,
             say: Callable[[str], None] = print) -> IngestSummary:
    """Generate, ingest, refresh, train, evaluate, promote, recommend, then stream live events (README)."""
    from recsys_lib.core.privacy import stored_id
    from recsys_lib.pipelines.demo_live import live_stream
    from recsys_lib.pipelines.evaluate import run_evaluate, run_promote
    from recsys_lib.pipelines.serve import run_batch_recommendations, run_export, run_recommend
    from recsys_lib.pipelines.train import run_train

    t0 = time.monotonic()
    steps = 8

    def step(i: int, text: str) -> None:
        say(f"[{i}/{steps}] {text}  (t+{time.monotonic() - t0:.0f}s)")

    landing = Path(cfg.landing_dir) / "demo"
    step(1, f"generating {events:,} synthetic events (plus duplicates and bad records) into {landing}")
    spec = GeneratorSpec(users=max(200, events // 70), items=max(100, events // 140), days=14, events=events,
                         seed=seed)
    manifest = run_generate(spec, landing)
    say(f"      wrote {manifest.lines:,} lines in {manifest.files} files: {manifest.valid_events:,} events, "
        f"{manifest.duplicates:,} duplicates, {manifest.bad:,} bad records, {manifest.late_events:,} late")
    step(2, "starting Spark and ingesting into the events Delta table")
    ctx = start(cfg)
    try:
        summary = run_ingest(ctx.spark, ctx.lake, cfg, str(landing))
        say(format_summary(summary))
        step(3, "full refresh of the feature tables")
        refreshed = run_refresh(ctx.spark, ctx.lake, cfg)
        say(format_refresh(refreshed))
        step(4, "point-in-time training set")
        built = run_training_set(ctx.spark, ctx.lake, cfg, list(cfg.train.label_types))
        say(f"      {built['rows']:,} rows in training_examples version {built['version']}")
        step(5, "training the two-tower model (TensorFlow Recommenders, tracked in MLflow)")
        trained = run_train(ctx.spark, ctx.lake, cfg, say=lambda m: say(f"      {m}"))
        step(6, "evaluating against the baselines on the temporal holdout, then the promotion gate")
        run_evaluate(ctx.spark, ctx.lake, cfg, version=trained["version"], say=lambda m: say(f"      {m}"))
        run_promote(ctx.spark, ctx.lake, cfg, version=trained["version"], say=lambda m: say(f"      {m}"))
        step(7, "exporting the ANN index and recommending")
        run_export(ctx.spark, ctx.lake, cfg, say=lambda m: say(f"      {m}"))
        run_batch_recommendations(ctx.spark, ctx.lake, cfg, say=lambda m: say(f"      {m}"))
        active = (load_features(ctx.spark, "user", cfg=cfg).orderBy(F.desc("view_count")).limit(3)
                  .select("user_id").toPandas())
        # the tables hold pseudonyms; the demo knows its generator's raw ids (u0, u1, ...) and shows those
        raw_of = {stored_id(cfg, f"u{n}"): f"u{n}" for n in range(spec.users)}
        active = [raw_of.get(u, u) for u in active["user_id"]]  # type: ignore[index]
        for user in active[:2]:
            say(f"      top 5 for {user}:")
            say(_indent(run_recommend(ctx.spark, ctx.lake, cfg, user, 5)
                        .drop(columns=["source", "model_version"]).to_string(index=False)))
        step(8, f"streaming for about {stream_seconds:.0f}s while new events arrive")
        live_stream(ctx.spark, ctx.lake, cfg, active[-1], seconds=stream_seconds, say=say)
        say(f"\nData root: {cfg.home_dir}")
        say(f"  Delta tables: {cfg.lake_root}/<table> (events, events_quarantine, user_features, item_features,")
        say("                user_category_features, training_examples, recommendations)")
        say(f"  MLflow:       {cfg.mlflow_tracking_uri}")
        say(f"  MLflow UI:    .venv/bin/mlflow ui --backend-store-uri {cfg.mlflow_tracking_uri}  (http://127.0.0.1:5000)")
        say("  inspect:      recsys lake history events | recsys stream-status | recsys recommend --user <id>")
        say(f"Demo finished in {time.monotonic() - t0:.0f}s.")
    finally:
        ctx.stop()
    return summary


def _indent(text: str) -> str:
    return "\n".join(f"        {line}" for line in text.splitlines())
