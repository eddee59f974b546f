"""The model commands of the ``recsys`` CLI: train, tune, evaluate, promote, export, recommend, recommendations."""

from __future__ import annotations

import argparse
import json
from typing import Any

from recsys_lib.cli_help import GATE_SAID_NO, keep
from recsys_lib.pipelines.context import JobContext

COMMANDS = ("train", "tune", "evaluate", "promote", "export", "recommend", "recommendations")


def add_model_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register the model subcommands on the CLI's subparsers."""
    train = sub.add_parser("train", parents=[common], help="train the two-tower model, log to MLflow, register it")
    train.add_argument("--warm-start", action="store_true",
                       help="start from the champion and train on the newest train.warm_start_days only")
    train.add_argument("--continuous", action="store_true",
                       help="the model-update loop: every train.update_every rebuild the training set, warm-start "
                            "the champion, run the gate, promote and export (one update at a time)")
    train.add_argument("--cycles", type=_at_least_one, metavar="N",
                       help="with --continuous: stop after N cycles (default: run until interrupted)")

    tune = sub.add_parser("tune", parents=[common],
                          help="search train settings on the inner time split (Optuna, each trial an MLflow run) "
                               "and write the best as a config overlay")
    tune.add_argument("--trials", type=_at_least_one, metavar="N", help="how many trials (default: tune.trials)")
    tune.add_argument("--out", metavar="FILE", help="the overlay to write (default: <home>/tuning/train.yaml)")

    ev = sub.add_parser("evaluate", parents=[common], help="holdout metrics of the model and the baselines")
    ev.add_argument("--version", help="model version (default: the champion, else the latest)")
    ev.add_argument("--report-json", help='write {"models": {name: metrics}} here')
    ev.add_argument("--plot", help="write a recall@K PNG here")
    ev.add_argument("--no-baselines", action="store_true", help="score only the two-tower model")
    ev.add_argument("--seeds", type=_at_least_one, metavar="N",
                    help="train N models (seeds train.seed, +1, ...) and report mean ± std and paired bootstrap "
                         "95%% intervals of the difference to each baseline (registers nothing)")
    ev.add_argument("--holdout-days", type=_at_least_one, metavar="D", help="the holdout's length (train.holdout_days)")

    promote = sub.add_parser("promote", parents=[common],
                             help="move the champion alias if the candidate beats it on the holdout")
    promote.add_argument("--version", help="candidate version (default: the latest)")
    promote.add_argument("--ok-if-not-promoted", action="store_true",
                         help="exit 0 when the gate says no (default: exit 3), e.g. in a DAG whose next step "
                              "exports the champion either way")

    sub.add_parser("export", parents=[common],
                   help="champion's item embeddings and ANN index over the current items, for serving")

    rec = sub.add_parser("recommend", parents=[common], help="top-k items for one user from current features")
    rec.add_argument("--user", required=True)
    rec.add_argument("--k", type=int, help="how many (default: serve.k)")
    rec.add_argument("--json", action="store_true", help="print JSON lines instead of a table")

    batch = sub.add_parser("recommendations", parents=[common],
                           help="batch top-k for every active user into the recommendations table")
    batch.add_argument("--k", type=int, help="how many per user (default: serve.batch_k)")


def _at_least_one(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def flag_overrides(args: argparse.Namespace) -> list[str]:
    """Config overrides that model-command flags stand for (``--holdout-days``), applied after ``--set``."""
    days = getattr(args, "holdout_days", None)
    return [] if days is None else [f"train.holdout_days={days}"]


def run_model_command(args: argparse.Namespace, ctx: JobContext) -> int:
    """Run one model command; the exit code."""
    spark, lake, cfg = ctx.spark, ctx.lake, ctx.cfg
    if args.command == "train" and args.continuous:
        from recsys_lib.pipelines.update import run_continuous

        cycles = run_continuous(spark, lake, cfg, cycles=args.cycles)
        keep(args, {"cycles": cycles})
        return 1 if any("failed" in c for c in cycles) else 0
    if args.command == "train":
        from recsys_lib.pipelines.train import run_train

        out = run_train(spark, lake, cfg, warm_start=args.warm_start)
        keep(args, out)
        return 0
    if args.command == "tune":
        from recsys_lib.pipelines.tune import run_tune

        tuned = run_tune(spark, lake, cfg, trials=args.trials, out=args.out)
        keep(args, tuned)
        return 0
    if args.command == "evaluate" and args.seeds is not None:
        from recsys_lib.pipelines.compare import run_seeds

        keep(args, run_seeds(spark, lake, cfg, args.seeds, report_json=args.report_json))
        return 0
    if args.command == "evaluate":
        from recsys_lib.pipelines.evaluate import run_evaluate

        keep(args, run_evaluate(spark, lake, cfg, version=args.version, baselines=not args.no_baselines,
                                report_json=args.report_json, plot=args.plot))
        return 0
    if args.command == "promote":
        from recsys_lib.pipelines.evaluate import run_promote

        decided = keep(args, run_promote(spark, lake, cfg, version=args.version))
        return 0 if decided["promoted"] or args.ok_if_not_promoted or decided["reason"] == "already champion" \
            else GATE_SAID_NO
    if args.command == "export":
        from recsys_lib.pipelines.serve import run_export

        keep(args, run_export(spark, lake, cfg))
        return 0
    if args.command == "recommend":
        from recsys_lib.pipelines.serve import run_recommend

        recs = run_recommend(spark, lake, cfg, args.user, args.k)
        keep(args, {"user": args.user, "recommendations": recs.to_dict(orient="records")})
        if args.json:
            for row in recs.to_dict(orient="records"):
                print(json.dumps(row, default=str))
        else:
            print(f"user {args.user}: {recs['source'].iloc[0] if len(recs) else 'nothing to recommend'} "
                  f"(model version {recs['model_version'].iloc[0] if len(recs) else '-'})")
            print(recs.drop(columns=["source", "model_version"]).to_string(index=False))
        return 0
    from recsys_lib.pipelines.serve import run_batch_recommendations

    keep(args, run_batch_recommendations(spark, lake, cfg, k=args.k))
    return 0
