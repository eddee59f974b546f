"""``recsys evaluate --seeds N``: the two-tower model trained with N seeds against every baseline.

One prepared training set and one holdout serve every seed (seeds ``train.seed``,
``train.seed + 1``, ...), so the seeds differ only in initialisation and batch order. For
recall@50 and NDCG@10 the report gives:

* the two-tower's mean ± std over the seeds (each seed's holdout mean) and each baseline's value;
* per baseline, the paired bootstrap 95% interval of the per-user difference (the user's
  metric averaged over the seeds, minus the baseline's for the same user);
* the same means for warm users (a labelled event before the cutoff) and cold users.

It is logged to MLflow as an ``evaluate-seeds`` run: the summary as metrics and JSON, and the
per-user metrics as ``per_user.csv`` (row numbers and the warm flag, no user ids, so the forget
job has nothing to scrub there). No model is registered.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import SparkSession

from recsys_lib.core.config import RecsysConfig
from recsys_lib.lake import Lake

Say = Callable[[str], None]
#: The metrics the comparison reports with confidence intervals.
COMPARED = ("recall@50", "ndcg@10")


def run_seeds(spark: SparkSession, lake: Lake, cfg: RecsysConfig, seeds: int, *, report_json: str | None = None,
              say: Say = print) -> dict[str, Any]:
    """Train ``seeds`` models and compare them with the baselines (see the module docstring).

    Raises:
        ValueError: If ``seeds`` < 1 or ``evaluate.ks`` lacks a K of :data:`COMPARED`.

    """
    import mlflow

    from recsys_lib.models import tracking
    from recsys_lib.models.data import candidate_chunk, chunk_source, encode, query_chunk
    from recsys_lib.models.evaluate import baseline_scorers, embedding_scorer, ranked
    from recsys_lib.models.metrics import paired_bootstrap, per_user_metrics
    from recsys_lib.models.trainer import fit
    from recsys_lib.pipelines.train import prepare

    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    ec = cfg.evaluate
    missing = [m for m in COMPARED if int(m.split("@")[1]) not in ec.ks]
    if missing:
        raise ValueError(f"evaluate.ks {list(ec.ks)} must include the K of {missing}")
    started = time.monotonic()
    prep = prepare(spark, lake, cfg)
    holdout = prep.holdout

    def per_user(scorer: Any) -> dict[str, np.ndarray]:
        top = ranked(scorer, holdout, max(ec.ks), filter_purchased=ec.filter_purchased, filter_seen=ec.filter_seen)
        return per_user_metrics(top, holdout.truth, ec.ks)

    tuned: dict[str, Any] = {}
    models = {name: per_user(s) for name, s in baseline_scorers(spark, holdout, ec, cfg.train.seed,
                                                                  tuned=tuned).items()}
    items = pa.Table.from_pandas(holdout.items, preserve_index=False)
    runs = []
    for seed in range(cfg.train.seed, cfg.train.seed + seeds):
        tc = cfg.train.model_copy(update={"seed": seed})
        model = fit(prep.spec, chunk_source(prep.files, prep.spec, prep.prior, tc), prep.rows, tc).model
        scorer = embedding_scorer(encode(model.query, query_chunk(holdout.users, prep.spec)),
                                  encode(model.candidate, candidate_chunk(items, prep.spec)))
        runs.append(per_user(scorer))
        say(f"seed {seed}: " + ", ".join(f"{m} {runs[-1][m].mean():.4f}" for m in COMPARED))
    users = runs[0]["user"]
    models["two_tower"] = {m: np.mean([r[m] for r in runs], axis=0) for m in COMPARED}
    ids = holdout.users.column("user_id").to_pylist()
    warm = holdout.train_users.get_indexer([ids[u] for u in users]) >= 0
    report = _report(models, runs, warm, paired_bootstrap, cfg.train.seed)
    report |= {"seeds": list(range(cfg.train.seed, cfg.train.seed + seeds)), "cutoff": prep.cutoff.isoformat(),
               "holdout_days": cfg.train.holdout_days, "baseline_settings": tuned,
               "seconds": round(time.monotonic() - started, 2)}
    for line in format_seeds(report):
        say(line)
    tracking.configure(cfg)
    with mlflow.start_run(run_name="evaluate-seeds"), tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params({"seeds": seeds, "holdout_days": cfg.train.holdout_days})
        mlflow.log_metrics({f"two_tower_{m}_mean".replace("@", "_at_"): report["models"]["two_tower"][m]["mean"]
                            for m in COMPARED})
        frame = pd.DataFrame({"row": users, "warm": warm}
                             | {f"{name}:{m}": values[m] for name, values in models.items() for m in COMPARED})
        frame.to_csv(Path(tmp) / "per_user.csv", index=False)
        (Path(tmp) / "seeds.json").write_text(json.dumps(report, indent=2, default=str))
        mlflow.log_artifacts(tmp, "evaluation")
    if report_json:
        Path(report_json).parent.mkdir(parents=True, exist_ok=True)
        Path(report_json).write_text(json.dumps(report, indent=2, default=str))
    return report


def _report(models: dict[str, dict[str, np.ndarray]], runs: list[dict[str, np.ndarray]], warm: np.ndarray,
            bootstrap: Callable[..., tuple[float, float, float]], seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"users": {"holdout": int(len(warm)), "warm": int(warm.sum()),
                                     "cold": int((~warm).sum())}, "models": {}, "difference": {}}
    for name, values in models.items():
        row: dict[str, Any] = {}
        for m in COMPARED:
            if name == "two_tower":
                means = [float(r[m].mean()) for r in runs]
                row[m] = {"mean": float(np.mean(means)), "std": float(np.std(means)), "per_seed": means}
            else:
                row[m] = {"mean": float(values[m].mean())}
            row[m] |= {"warm": _mean(values[m][warm]), "cold": _mean(values[m][~warm])}
        out["models"][name] = row
        if name != "two_tower":
            out["difference"][name] = {}
            for m in COMPARED:
                diff, low, high = bootstrap(models["two_tower"][m], values[m], seed=seed)
                out["difference"][name][m] = {"mean": diff, "ci95": [low, high]}
    return out


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def format_seeds(report: dict[str, Any]) -> list[str]:
    """The report as text: a table of models, then each baseline's difference with its interval."""
    u = report["users"]
    lines = [f"{len(report['seeds'])} seed(s); holdout users {u['holdout']:,}: {u['warm']:,} with history before "
             f"the cutoff, {u['cold']:,} cold",
             f"{'model':<14}" + "".join(f"{m + ' (all/warm/cold)':>34}" for m in COMPARED)]
    for name, row in report["models"].items():
        cells = []
        for m in COMPARED:
            main = f"{row[m]['mean']:.4f}" + (f"±{row[m]['std']:.4f}" if "std" in row[m] else "")
            cells.append(f"{main} / {_fmt(row[m]['warm'])} / {_fmt(row[m]['cold'])}")
        lines.append(f"{name:<14}" + "".join(f"{c:>34}" for c in cells))
    for name, diffs in report["difference"].items():
        lines.append(f"two_tower - {name}: " + ", ".join(
            f"{m} {d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]" for m, d in diffs.items()))
    return lines


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
