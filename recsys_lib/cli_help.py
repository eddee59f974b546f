"""Plain-text help for the ``recsys`` CLI: one example per command, the exit codes, completion.

:func:`decorate` walks a built parser and gives every command a description (its one-line help)
and an epilog with its example, so ``recsys COMMAND --help`` always shows how to call it. The
test suite checks that every command has an example here.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from typing import Any

#: Exit code of a command whose gate said no.
GATE_SAID_NO = 3
#: Exit codes of every command (``recsys --help`` prints them).
EXIT_CODES = {0: "ok", 1: "the job failed (the message says why; -v adds the traceback)",
              2: "bad usage or config (the message names the flag or key)",
              3: "a gate said no: promote did not promote, online verify found mismatches, a refresh failed "
                 "its data-quality checks (not published)",
              141: "stdout was closed early (e.g. piped into head); the job stopped there"}



def keep(args: argparse.Namespace, payload: Any) -> Any:
    """Keep ``payload`` (a dict or a dataclass) as the command's summary for ``--summary-json``; return it."""
    args.summary = asdict(payload) if is_dataclass(payload) and not isinstance(payload, type) else payload
    return payload


def finish(args: argparse.Namespace, code: int, error: BaseException | None = None) -> int:
    """Write ``--summary-json`` (the kept summary, the command, its exit code and any error); return ``code``.

    Written on failure too, so a scheduler reads why a job failed from the same file.
    """
    path = getattr(args, "summary_json", None)
    if path:
        from recsys_lib.pipelines.ingest import write_json

        kept = getattr(args, "summary", None)
        body = dict(kept) if isinstance(kept, dict) else {} if kept is None else {"summary": kept}
        sub = getattr(args, "action", None) or getattr(args, "source", None)  # the second word, if any
        body |= {"command": " ".join(str(p) for p in (args.command, sub) if p),
                 "exit_code": code}
        if error is not None:
            body["error"] = f"{type(error).__name__}: {error}"
        write_json(path, body)
    return code


DESCRIPTION = """\
recsys keeps an e-commerce recommender fresh: raw behaviour logs become a validated events
Delta table, feature tables, a point-in-time training set, a two-tower model and an index,
and an online store behind a recommendation API.

Everything runs locally under one data folder ($RECSYS_HOME, default ./data) unless the
config says otherwise. Every command takes --conf FILE (a YAML overlay, repeatable) and
--set dotted.key=value (repeatable); `recsys config` prints the result."""

#: One example per command path (space separated), shown under ``recsys PATH --help``.
EXAMPLES = {
    "generate": "recsys generate --out data/landing --events 200000 --days 14",
    "ingest": "recsys ingest --input data/landing --summary-json ingest.json",
    "adapt": "recsys adapt movielens --ratings ratings.csv --movies movies.csv --out data/landing",
    "adapt movielens": "recsys adapt movielens --ratings ml/ratings.csv --movies ml/movies.csv --out data/landing",
    "adapt taobao": "recsys adapt taobao --input UserBehavior.csv --out data/landing",
    "lake": "recsys lake history events --limit 5",
    "lake history": "recsys lake history events --limit 5",
    "lake show": "recsys lake show user_features --rows 10",
    "lake compact": "recsys lake compact events",
    "lake vacuum": "recsys lake vacuum events --retention-hours 168",
    "features": "recsys features refresh",
    "features refresh": "recsys features refresh --summary-json refresh.json",
    "features catalogue": "recsys features catalogue --out FEATURES.md",
    "training-set": "recsys training-set build --label-types purchase,add_to_cart,click",
    "training-set build": "recsys training-set build --label-types purchase,add_to_cart,click",
    "stream": "recsys stream --input data/landing --available-now",
    "stream-status": "recsys stream-status --limit 5",
    "maintain": "recsys maintain --tables events user_features",
    "forget": "recsys forget --user u123 --summary-json forget.json",
    "train": "recsys train --conf conf/movielens.yaml --summary-json train.json",
    "tune": "recsys tune --conf conf/movielens.yaml --trials 12   # then: recsys train --conf ... --conf "
            "data/tuning/train.yaml",
    "evaluate": "recsys evaluate --seeds 5 --holdout-days 2 --report-json quality.json",
    "promote": "recsys promote || echo \"exit 3: the candidate did not beat the champion\"",
    "export": "recsys export",
    "recommend": "recsys recommend --user u123 --k 10",
    "recommendations": "recsys recommendations --k 50",
    "online": "recsys online sync",
    "online sync": "recsys online sync --full",
    "online verify": "recsys online verify --limit 5",
    "online stats": "recsys online stats",
    "serve": "recsys serve --set serve.port=8080   # then: curl localhost:8080/recommendations/u123",
    "status": "recsys status --json | jq .online",
    "config": "recsys config --conf conf/cluster.yaml | head -40",
    "demo": "recsys demo --events 50000 --stream-seconds 20",
    "completion": "recsys completion bash > ~/.local/share/bash-completion/completions/recsys",
}


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """Every (command path, its parser, its one-line help) under ``parser``, depth first."""
    for action in parser._actions:  # noqa: SLF001 - argparse exposes sub-commands only here
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            helps = {a.dest: a.help or "" for a in action._choices_actions}  # noqa: SLF001
            for name, sub in action.choices.items():
                yield (*path, name), sub, helps.get(name, "")
                yield from commands(sub, (*path, name))


def decorate(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Plain-text description, exit codes and examples on ``parser`` and every command under it."""
    parser.description = DESCRIPTION
    parser.epilog = "exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES.items()) \
        + "\n\nexample:\n  recsys demo            # a sample end to end under ./data\n  recsys COMMAND --help"
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for path, sub, text in commands(parser):
        sub.description = sub.description or (text[:1].upper() + text[1:] + "." if text else None)
        example = EXAMPLES.get(" ".join(path))
        if example:
            sub.epilog = f"example:\n  {example}"
            sub.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The shell completion script for ``parser`` (bash, zsh or tcsh), generated by shtab."""
    import shtab

    return str(shtab.complete(parser, shell=shell))
