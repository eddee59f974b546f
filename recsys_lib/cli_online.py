"""``recsys online sync|verify|stats`` and ``recsys serve``: the online store and the HTTP API."""

from __future__ import annotations

import argparse
import json
from typing import Any

from recsys_lib.cli_help import GATE_SAID_NO, keep
from recsys_lib.core.config import RecsysConfig

COMMANDS = ("online", "serve")


def add_online_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the commands to the ``recsys`` parser."""
    online = sub.add_parser("online", help="the online feature store: sync, verify, stats")
    actions = online.add_subparsers(dest="action", required=True, metavar="ACTION")
    sync = actions.add_parser("sync", parents=[common], help="catch the store up with the feature tables")
    sync.add_argument("--full", action="store_true", help="load a new generation from scratch and switch to it")
    verify = actions.add_parser("verify", parents=[common],
                                help="compare every stored row with Delta; exit 1 on any mismatch")
    verify.add_argument("--limit", type=int, default=20, help="mismatches printed per table")
    actions.add_parser("stats", parents=[common], help="rows, bytes, generation and versions")
    sub.add_parser("serve", parents=[common], help="run the recommendation HTTP API (FastAPI on uvicorn)")


def run_online_command(args: argparse.Namespace, cfg: RecsysConfig) -> int:
    """Run one of :data:`COMMANDS`; return the exit code."""
    from recsys_lib.pipelines import online as jobs

    if args.command == "serve":
        print(f"serving on http://{cfg.serve.host}:{cfg.serve.port} ({cfg.serve.workers} worker(s), "
              f"online store: {cfg.online.backend}); API reference at /docs", flush=True)
        serve(cfg, list(args.conf), list(args.overrides))
        return 0
    if args.action == "sync":
        report = keep(args, jobs.run_sync(cfg, full=args.full))
        print(json.dumps(report, default=str))
        return 0
    if args.action == "verify":
        compared, mismatches = jobs.run_verify(cfg, limit=args.limit)
        for line in mismatches:
            print(line)
        keep(args, {"compared": compared, "mismatches": mismatches})
        print(f"online verify: {compared:,} rows compared, {len(mismatches)} mismatch line(s)")
        return GATE_SAID_NO if mismatches else 0
    print(json.dumps(keep(args, jobs.run_stats(cfg)), indent=2, default=str))
    return 0


def serve(cfg: RecsysConfig, conf_files: list[str], overrides: list[str]) -> None:
    """Run the HTTP API under uvicorn with ``serve.workers`` processes until interrupted."""
    import os

    import uvicorn

    from recsys_lib.api import ARGS_ENV

    os.environ[ARGS_ENV] = json.dumps({"conf": conf_files, "overrides": overrides})
    uvicorn.run("recsys_lib.api:app_from_env", factory=True, host=cfg.serve.host, port=cfg.serve.port,
                workers=cfg.serve.workers, log_level="warning", access_log=False)
