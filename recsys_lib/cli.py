"""The ``recsys`` command line: a thin face over :mod:`recsys_lib.pipelines`.

Every command takes ``--conf FILE`` (repeatable) and ``--set dotted.key=value``
(repeatable). Exit codes are :data:`recsys_lib.cli_help.EXIT_CODES`: 0 ok, 1 the job failed,
2 bad usage or config, 3 a gate said no, 141 stdout closed early. Help text and examples live
in :mod:`recsys_lib.cli_help`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime

from recsys_lib import __version__
from recsys_lib.cli_help import GATE_SAID_NO, completion_script, decorate, finish, keep
from recsys_lib.cli_models import COMMANDS as MODEL_COMMANDS
from recsys_lib.cli_models import add_model_commands, flag_overrides, run_model_command
from recsys_lib.cli_online import COMMANDS as ONLINE_COMMANDS
from recsys_lib.cli_online import add_online_commands, run_online_command
from recsys_lib.core.config import ConfigError, RecsysConfig, load_config, redacted
from recsys_lib.core.durations import parse_duration
from recsys_lib.lake import Lake


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("config")
    group.add_argument("--conf", action="append", default=[], metavar="FILE",
                       help="YAML config overlay (repeatable; later files win)")
    group.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                       help="override one dotted config key, e.g. spark.master=local[2] (repeatable)")
    group.add_argument("--summary-json", metavar="FILE",
                       help="also write the command's summary here as JSON, with its exit code (and error)")
    loud = group.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_true", help="log at INFO level, tracebacks on failure")
    loud.add_argument("-q", "--quiet", action="store_true", help="log errors only (no warnings)")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by the ``jobs/`` entry points)."""
    common = _common()
    parser = argparse.ArgumentParser(prog="recsys")
    parser.add_argument("--version", action="version", version=f"recsys {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser("generate", parents=[common], help="write synthetic raw logs with planted signal")
    gen.add_argument("--out", required=True, help="landing folder to write date=YYYY-MM-DD/ files into")
    gen.add_argument("--users", type=int, default=2_000)
    gen.add_argument("--items", type=int, default=1_000)
    gen.add_argument("--days", type=int, default=14)
    gen.add_argument("--events", type=int, default=100_000, help="valid events (dirt comes on top)")
    gen.add_argument("--bad-fraction", type=float, default=0.01)
    gen.add_argument("--duplicate-fraction", type=float, default=0.005)
    gen.add_argument("--late-fraction", type=float, default=0.01)
    gen.add_argument("--seed", type=int, default=42)
    gen.add_argument("--start", type=date.fromisoformat, default=date(2024, 1, 1), help="first day (YYYY-MM-DD)")
    gen.add_argument("--no-gzip", action="store_true", help="write plain .jsonl instead of .jsonl.gz")

    ing = sub.add_parser("ingest", parents=[common], help="validate raw logs into the events Delta table")
    ing.add_argument("--input", help="raw landing folder (default: ingest.landing_dir)")

    adapt = sub.add_parser("adapt", help="convert a real data set into raw logs")
    adapt_sub = adapt.add_subparsers(dest="source", required=True, metavar="DATASET")
    ml = adapt_sub.add_parser("movielens", parents=[common], help="MovieLens ratings.csv + movies.csv")
    ml.add_argument("--ratings", required=True)
    ml.add_argument("--movies", required=True)
    ml.add_argument("--out", required=True)
    tb = adapt_sub.add_parser("taobao", parents=[common], help="Taobao UserBehavior CSV")
    tb.add_argument("--input", required=True)
    tb.add_argument("--out", required=True)

    lake = sub.add_parser("lake", help="inspect and maintain Delta tables")
    lake_sub = lake.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("history", "commit history"), ("show", "first rows"),
                         ("compact", "bin-pack small files"), ("vacuum", "delete unreferenced files")):
        p = lake_sub.add_parser(action, parents=[common], help=text)
        p.add_argument("table")
        if action == "history":
            p.add_argument("--limit", type=int, default=10)
        if action == "show":
            p.add_argument("--rows", type=int, default=20)
            p.add_argument("--version", type=int, dest="table_version")
        if action == "vacuum":
            _retention_args(p)

    feats = sub.add_parser("features", help="feature tables: full refresh and catalogue")
    feats_sub = feats.add_subparsers(dest="action", required=True, metavar="ACTION")
    refresh = feats_sub.add_parser("refresh", parents=[common], help="recompute every feature table from events")
    refresh.add_argument("--until", type=_timestamp, help="only fold events at or before this ISO-8601 time")
    cat = feats_sub.add_parser("catalogue", parents=[common], help="print (or write) docs/features.md")
    cat.add_argument("--out", help="write the catalogue to this file")

    ts = sub.add_parser("training-set", help="point-in-time training data")
    ts_sub = ts.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = ts_sub.add_parser("build", parents=[common], help="one row per labelled event, features strictly before it")
    build.add_argument("--label-types", default="purchase,add_to_cart,click",
                       help="comma-separated event types that make examples")
    build.add_argument("--from", dest="first_day", type=date.fromisoformat, help="first label day (YYYY-MM-DD)")
    build.add_argument("--to", dest="last_day", type=date.fromisoformat, help="last label day, inclusive")

    stream = sub.add_parser("stream", parents=[common], help="Structured Streaming: landing folder -> tables")
    stream.add_argument("--input", help="landing folder (default: ingest.landing_dir)")
    mode = stream.add_mutually_exclusive_group()
    mode.add_argument("--trigger", type=parse_duration, help="micro-batch interval, e.g. 1s (default: config)")
    mode.add_argument("--available-now", action="store_true", help="process the backlog, then stop")
    status = sub.add_parser("stream-status", parents=[common], help="print the stream's last batches")
    status.add_argument("--limit", type=int, default=10)

    maintain = sub.add_parser("maintain", parents=[common], help="compact and vacuum every table (safe mid-stream)")
    maintain.add_argument("--tables", nargs="*", help="only these tables (default: all)")
    _retention_args(maintain)
    maintain.add_argument("--no-vacuum", action="store_true")

    forget = sub.add_parser("forget", parents=[common],
                            help="erase people from every table, the online store and Delta's history")
    forget.add_argument("--user", action="append", default=[], help="the shop's raw user id (repeatable)")
    forget.add_argument("--users-file", help="a file of raw user ids, one per line")
    forget.add_argument("--lift", action="store_true",
                        help="lift these people's tombstones: their new events are ingested again")

    add_model_commands(sub, common)
    add_online_commands(sub, common)

    status = sub.add_parser("status", parents=[common],
                            help="tables, stream, champion, index, online store and data quality on one screen")
    status.add_argument("--json", action="store_true", help="print the same as JSON, for machines")
    status.add_argument("--max-stream-lag", type=parse_duration, default=300.0, metavar="DURATION",
                        help="unprocessed input older than this makes the stream stale (default 5m)")
    sub.add_parser("config", parents=[common], help="print the resolved config")
    demo = sub.add_parser("demo", parents=[common], help="generate a sample and run the suite end to end")
    demo.add_argument("--events", type=int, default=200_000)
    demo.add_argument("--stream-seconds", type=float, default=60.0, help="how long the live streaming part runs")
    comp = sub.add_parser("completion", help="print a shell completion script")
    comp.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    return decorate(parser)


def _timestamp(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.INFO if getattr(args, "verbose", False) else \
        logging.ERROR if getattr(args, "quiet", False) else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # MLflow configures its own loggers at import, at INFO unless told ("Creating initial MLflow database tables")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", logging.getLevelName(level))
    try:
        if args.command == "completion":
            print(completion_script(parser, args.shell))
            return 0
        cfg = load_config(getattr(args, "conf", []), [*getattr(args, "overrides", []), *flag_overrides(args)])
        return finish(args, _dispatch(args, cfg))
    except BrokenPipeError:
        # the reader went away (`recsys config | head`): stop quietly, as Unix tools do on SIGPIPE
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except ConfigError as exc:
        print(f"recsys: config error: {exc}", file=sys.stderr)
        return finish(args, 2, exc)
    except Exception as exc:  # noqa: BLE001 - the face turns failures into exit codes
        print(f"recsys {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if getattr(args, "verbose", False):  # logged at ERROR, so -v (INFO) shows it
            logging.getLogger("recsys").error("recsys %s failed", args.command, exc_info=exc)
        else:
            print(f"recsys {args.command}: run again with -v for the traceback", file=sys.stderr)
        return finish(args, 1, exc)


def _dispatch(args: argparse.Namespace, cfg: RecsysConfig) -> int:
    if args.command == "config":
        resolved = {"resolved": redacted(cfg), "home_dir": cfg.home_dir, "lake_root": cfg.lake_root,
                    "published_root": cfg.published_root, "landing_dir": cfg.landing_dir}
        print(json.dumps(keep(args, resolved), indent=2))
        return 0
    if args.command == "generate":
        return _generate(args)
    if args.command == "status":
        from recsys_lib.pipelines.status import format_status, run_status

        report = keep(args, run_status(cfg, max_stream_lag=args.max_stream_lag))
        print(json.dumps(report, indent=2, default=str) if args.json else "\n".join(format_status(report)))
        return 0
    if args.command == "adapt":
        from recsys_lib.pipelines.data import run_adapt

        result = run_adapt(args.source, args.out, ratings=getattr(args, "ratings", None),
                           movies=getattr(args, "movies", None), taobao_csv=getattr(args, "input", None))
        print(f"adapted {result.source_rows:,} {args.source} rows into {result.events:,} events "
              f"({result.skipped:,} skipped) in {result.files:,} files under {args.out}")
        keep(args, result)
        return 0
    if args.command == "features" and args.action == "catalogue":
        from recsys_lib.features.catalogue import render

        text = render(cfg.features)
        if args.out:
            with open(args.out, "w") as fh:
                fh.write(text)
            print(f"wrote {args.out}")
        else:
            print(text)
        keep(args, {"out": args.out, "characters": len(text)})
        return 0
    if args.command == "stream-status":
        from recsys_lib.streaming.job import last_batches

        batches = keep(args, {"batches": last_batches(cfg, args.limit)})["batches"]
        if not batches:
            print(f"no batches recorded under {cfg.checkpoint_dir}")
        for b in batches:
            print(f"batch {b['batch_id']:>6}: {b['rows_in']:>8,} in {b['new_events']:>8,} new "
                  f"{b['quarantined']:>6,} quarantined {b['duplicates']:>6,} duplicates "
                  f"merge {b['merge_seconds']:.2f}s total {b['seconds']:.2f}s "
                  f"lag {b.get('freshness_lag_min_s')}..{b.get('freshness_lag_max_s')}s")
            for fallback in b.get("fallbacks") or []:
                print(f"    fell back to Spark: {fallback}")
        return 0
    if args.command == "forget":
        args.users = _forget_users(args)  # a usage mistake fails before Spark starts
        if args.lift:
            from recsys_lib.pipelines.forget import lift

            lifted = keep(args, {"lifted": lift(cfg, args.users)})["lifted"]
            print(f"lifted {lifted} tombstone(s): new events of these people are ingested again")
            return 0
    if args.command in ONLINE_COMMANDS:
        return run_online_command(args, cfg)
    if args.command == "demo":
        from recsys_lib.pipelines.demo import run_demo

        summary = run_demo(cfg, events=args.events, stream_seconds=args.stream_seconds)
        keep(args, summary.to_json())
        return 0 if summary.balanced else 1
    return _spark_command(args, cfg)


def _generate(args: argparse.Namespace) -> int:
    from recsys_lib.datagen.synthetic import GeneratorSpec
    from recsys_lib.pipelines.data import run_generate

    spec = GeneratorSpec(users=args.users, items=args.items, days=args.days, events=args.events,
                         bad_fraction=args.bad_fraction, duplicate_fraction=args.duplicate_fraction,
                         late_fraction=args.late_fraction, seed=args.seed, start=args.start,
                         compress=not args.no_gzip)
    m = run_generate(spec, args.out)
    keep(args, m)
    print(f"wrote {m.lines:,} lines ({m.valid_events:,} events, {m.duplicates:,} duplicates, "
          f"{m.bad:,} bad, {m.late_events:,} late) in {m.files} files under {args.out}")
    return 0


def _spark_command(args: argparse.Namespace, cfg: RecsysConfig) -> int:
    from recsys_lib.pipelines.context import start

    if hasattr(args, "retention_hours"):  # maintain, lake vacuum: resolved (or refused) before Spark starts
        from recsys_lib.pipelines.maintenance import vacuum_retention

        args.retention_hours = vacuum_retention(cfg, args.retention_hours, force=args.force)
    ctx = start(cfg, streaming=args.command == "stream", progress=not getattr(args, "quiet", False))
    try:
        if args.command in MODEL_COMMANDS:
            return run_model_command(args, ctx)
        if args.command == "ingest":
            from recsys_lib.pipelines.ingest import format_summary, run_ingest

            summary = run_ingest(ctx.spark, ctx.lake, cfg, args.input or None)
            keep(args, summary.to_json())
            print(format_summary(summary))
            return 0 if summary.balanced else 1
        if args.command == "forget":
            from recsys_lib.pipelines.forget import run_forget

            forgot = run_forget(ctx.spark, ctx.lake, cfg, args.users)
            print(f"forgot {forgot.people} people ({forgot.run_id}): rows deleted {forgot.rows_deleted}, "
                  f"{forgot.online_removed} online rows, {forgot.files_removed} files purged from history, "
                  f"{forgot.seconds:.1f}s; audit record in forget_log")
            keep(args, forgot.to_json())
            return 0
        if args.command == "lake":
            return _lake(args, ctx.lake)
        if args.command == "maintain":
            from recsys_lib.pipelines.maintenance import run_maintenance

            done = run_maintenance(ctx.lake, args.tables, retention_hours=args.retention_hours,
                                   vacuum=not args.no_vacuum, cfg=cfg)
            keep(args, {"tables": done})
            for table, info in done.items():
                print(f"{table:<26} compacted +{info['files_added']}/-{info['files_removed']} files, "
                      f"vacuumed {info['vacuumed']}, version {info['version']}, {info['seconds']:.1f}s")
            return 0
        if args.command == "stream":
            from recsys_lib.streaming.job import run_stream

            reports = run_stream(ctx.spark, ctx.lake, cfg, args.input, available_now=args.available_now,
                                 trigger_seconds=args.trigger)
            keep(args, {"batches": len(reports), "new_events": sum(r["new_events"] for r in reports),
                        "reports": reports})
            print(f"stream stopped after {len(reports)} batches "
                  f"({sum(r['new_events'] for r in reports):,} new events)")
            return 0
        if args.command == "training-set":
            from recsys_lib.pipelines.training import run_training_set

            built = run_training_set(ctx.spark, ctx.lake, cfg, [t.strip() for t in args.label_types.split(",") if t],
                                     args.first_day, args.last_day)
            print(f"training set: {built['rows']:,} rows in '{built['table']}' version {built['version']} "
                  f"from events version {built['events_version']} ({built['seconds']:.1f}s)")
            keep(args, built)
            return 0
        if args.command == "features":
            from recsys_lib.features.quality import DataQualityError
            from recsys_lib.pipelines.features import format_refresh, run_refresh

            try:
                refreshed = run_refresh(ctx.spark, ctx.lake, cfg, until=args.until)
            except DataQualityError as exc:
                print(f"recsys features: {exc}", file=sys.stderr)
                keep(args, {"dq": [r.to_json() for r in exc.results]})
                return GATE_SAID_NO
            print(format_refresh(refreshed))
            keep(args, refreshed.to_json())
            return 0
        raise ValueError(f"unknown command {args.command!r}")
    finally:
        ctx.stop()


def _forget_users(args: argparse.Namespace) -> list[str]:
    """The raw ids of ``--user`` and ``--users-file`` (blank lines skipped)."""
    users = list(args.user)
    if args.users_file:
        with open(args.users_file, encoding="utf-8") as fh:
            users += [line.strip() for line in fh if line.strip()]
    if not users:
        raise ValueError("recsys forget: give --user ID (repeatable) or --users-file FILE")
    return users


def _retention_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retention-hours", type=float, default=None,
                        help="keep files newer than this (default: lake.longest_reader + streaming.trigger)")
    parser.add_argument("--force", action="store_true",
                        help="vacuum with a retention below that minimum (files readers need may go)")


def _lake(args: argparse.Namespace, lake: Lake) -> int:
    if args.action == "history":
        for entry in keep(args, {"history": lake.history(args.table, args.limit)})["history"]:
            print(json.dumps(entry, default=str))
    elif args.action == "show":
        lake.read(args.table, version=args.table_version).show(args.rows, truncate=40)
        keep(args, {"table": args.table, "version": args.table_version, "rows_shown": args.rows})
    elif args.action == "compact":
        print(json.dumps(keep(args, lake.compact(args.table)), default=str))
    elif args.action == "vacuum":
        removed = lake.vacuum(args.table, args.retention_hours)  # resolved in _spark_command
        keep(args, {"table": args.table, "removed": removed})
        print(f"vacuum {args.table}: removed {len(removed)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
