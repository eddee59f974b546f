"""``recsys tune``: the two-tower's settings searched on the inner time split, written as an overlay.

The split is the evaluation's own inner split: labels in the ``evaluate.tune_days`` before the
holdout's cutoff are the validation truth, and training uses the labels before them. The holdout
is never read, so settings chosen here can be judged on it afterwards without bias.

* An Optuna study (TPE sampler seeded from ``train.seed``) proposes settings from ``tune.space``.
* Each trial trains up to ``tune.max_epochs`` epochs and scores ``evaluate.promote_metric`` on the
  validation users after every epoch. It stops after ``tune.patience`` epochs without improvement
  (early stopping); with ``tune.prune`` a trial below the median of earlier trials at the same
  epoch is stopped (Optuna's median pruner). Its value is its best epoch's score.
* Every trial is an MLflow run nested under one ``tune`` run: its settings as params, the metric
  per epoch, the best epoch. The tuned baselines are scored on the same split for reference.
* The best trial's settings, with ``train.epochs`` set to its best epoch count, are written as a
  YAML overlay: use it with ``--conf``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pyspark.sql import SparkSession

from recsys_lib.core.config import RecsysConfig, SearchRange
from recsys_lib.lake import Lake

Say = Callable[[str], None]
log = logging.getLogger(__name__)


def suggest(trial: Any, space: dict[str, SearchRange]) -> dict[str, Any]:
    """One value per setting of ``space`` from an Optuna ``trial``."""
    out: dict[str, Any] = {}
    for name, rng in space.items():
        if rng.choices is not None:
            out[name] = trial.suggest_categorical(name, list(rng.choices))
        elif rng.integer:
            out[name] = trial.suggest_int(name, int(rng.low or 0), int(rng.high or 0), log=rng.log)
        else:
            out[name] = trial.suggest_float(name, float(rng.low or 0.0), float(rng.high or 0.0), log=rng.log)
    return out


def run_tune(spark: SparkSession, lake: Lake, cfg: RecsysConfig, *, trials: int | None = None,
             out: str | None = None, say: Say = print) -> dict[str, Any]:
    """Search ``tune.space`` (see the module docstring) and write the best settings to ``out``.

    Args:
        trials: Overrides ``tune.trials``.
        out: The overlay's path (default ``<home>/tuning/train.yaml``).

    Returns:
        The best settings and value, every trial's value, the baselines' scores and the minutes spent.

    Raises:
        ValueError: If the inner split has fewer than ``tune.min_validation_users`` validation users, or no
            trial finished.

    """
    import mlflow
    import optuna

    from recsys_lib.models import tracking
    from recsys_lib.pipelines.evaluate import baseline_results
    from recsys_lib.pipelines.train import prepare

    started = time.monotonic()
    tu, metric, days = cfg.tune, cfg.evaluate.promote_metric, cfg.evaluate.tune_days
    n_trials = trials or tu.trials
    prep = prepare(spark, lake, cfg, inner_days=days)
    split = prep.holdout
    if len(split.truth) < tu.min_validation_users:
        raise ValueError(f"the inner split (the {days} day(s) of evaluate.tune_days before the holdout) has "
                         f"{len(split.truth)} validation user(s), fewer than tune.min_validation_users="
                         f"{tu.min_validation_users}: settings chosen on so few would be noise; widen "
                         "evaluate.tune_days or add data")
    say(f"tuning on {prep.rows:,} labels before {prep.cutoff:%Y-%m-%d}; validation: {len(split.truth):,} users "
        f"labelled in the {days} day(s) after, scored by {metric}")
    baselines = {n: m[metric] for n, m in baseline_results(spark, split, cfg).items() if metric in m}
    tracking.configure(cfg)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.train.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1) if tu.prune
        else optuna.pruners.NopPruner())
    with mlflow.start_run(run_name="tune") as parent:
        mlflow.log_params({"trials": n_trials, "metric": metric, "tune_days": days, "max_epochs": tu.max_epochs,
                           "patience": tu.patience, "inner_cutoff": prep.cutoff.isoformat(), "rows": prep.rows})
        mlflow.log_metrics({f"baseline_{n}": v for n, v in baselines.items()})
        study.optimize(lambda t: _trial(t, prep, cfg, say), n_trials=n_trials, timeout=tu.timeout,
                       catch=())
        done = [t for t in study.trials if t.value is not None]
        if not done:
            raise ValueError("no tuning trial finished")
        best = study.best_trial
        settings = dict(best.params) | {"epochs": int(best.user_attrs["best_epoch"])}
        minutes = (time.monotonic() - started) / 60
        mlflow.log_metrics({f"best_{metric}".replace("@", "_at_"): float(best.value or 0.0), "minutes": minutes})
        mlflow.log_params({f"best.{k}": v for k, v in settings.items()})
        target = Path(out) if out else Path(cfg.home_dir) / "tuning" / "train.yaml"
        write_overlay(target, settings, metric=metric, value=float(best.value or 0.0), baselines=baselines,
                      trials=len(study.trials), minutes=minutes, cutoff=prep.cutoff)
        mlflow.log_artifact(str(target), "tuning")
    strongest = max(baselines.items(), key=lambda kv: kv[1]) if baselines else None
    say(f"best of {len(study.trials)} trial(s) ({sum(t.state.name == 'PRUNED' for t in study.trials)} pruned): "
        f"{metric} {best.value:.4f} with {settings}"
        + (f"; strongest baseline on the same split: {strongest[0]} {strongest[1]:.4f}" if strongest else ""))
    say(f"wrote {target} in {minutes:.1f} min: add `--conf {target}` to train with these settings")
    return {"best": settings, "value": best.value, "metric": metric, "trials": [
        {"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
         "best_epoch": t.user_attrs.get("best_epoch")} for t in study.trials],
        "baselines": baselines, "overlay": str(target), "minutes": round(minutes, 2),
        "run_id": parent.info.run_id, "inner_cutoff": prep.cutoff.isoformat()}


def _trial(trial: Any, prep: Any, cfg: RecsysConfig, say: Say) -> float:
    """Train one proposal with early stopping on the inner split; its best epoch's score."""
    import mlflow
    import optuna
    import tensorflow as tf

    from recsys_lib.models.data import chunk_source
    from recsys_lib.models.trainer import fit
    from recsys_lib.pipelines.train import holdout_metrics, model_settings

    tu, metric = cfg.tune, cfg.evaluate.promote_metric
    params = suggest(trial, tu.space)
    tc = cfg.train.model_copy(update=params | {"epochs": tu.max_epochs})
    spec = replace(prep.spec, **model_settings(tc))
    scores: list[float] = []

    class Validate(tf.keras.callbacks.Callback):
        """Score the inner split after each epoch; stop on patience or when Optuna prunes."""

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            value = float(holdout_metrics(self.model, prep.holdout, cfg).get(metric, 0.0))
            scores.append(value)
            mlflow.log_metric(metric.replace("@", "_at_"), value, step=epoch + 1)
            trial.report(value, epoch + 1)
            if trial.should_prune():
                raise optuna.TrialPruned(f"{metric} {value:.4f} at epoch {epoch + 1} is below the median")
            if epoch + 1 - (scores.index(max(scores)) + 1) >= tu.patience:
                self.model.stop_training = True

    with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
        mlflow.log_params({f"train.{k}": v for k, v in params.items()})
        try:
            fit(spec, chunk_source(prep.files, spec, prep.prior, tc), prep.rows, tc, callbacks=[Validate()])
        except optuna.TrialPruned:
            mlflow.set_tag("state", "pruned")
            trial.set_user_attr("best_epoch", scores.index(max(scores)) + 1 if scores else 0)
            say(f"  trial {trial.number}: pruned after {len(scores)} epoch(s) ({metric} {max(scores or [0]):.4f})")
            raise
        except ValueError as exc:  # e.g. a batch size larger than the training rows
            log.warning("tuning trial %d failed with %s: %s", trial.number, params, exc)
            mlflow.set_tag("state", f"failed: {exc}")
            raise optuna.TrialPruned(str(exc)) from exc
        best_epoch = scores.index(max(scores)) + 1
        trial.set_user_attr("best_epoch", best_epoch)
        mlflow.log_metrics({"best_epoch": best_epoch, f"best_{metric}".replace("@", "_at_"): max(scores)})
    say(f"  trial {trial.number}: {metric} {max(scores):.4f} at epoch {best_epoch} of {len(scores)} with {params}")
    return max(scores)


def write_overlay(path: Path, settings: dict[str, Any], *, metric: str, value: float, baselines: dict[str, float],
                  trials: int, minutes: float, cutoff: datetime) -> None:
    """The tuned ``train`` settings as a YAML overlay, with a header saying where they came from."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = [f"# Written by `recsys tune` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: best of {trials} trial(s), "
              f"{minutes:.1f} min.",
              f"# Inner split: labels before {cutoff:%Y-%m-%d} trained, the tune_days after scored ({metric} "
              f"{value:.4f}).",
              "# Baselines on the same split: " + (", ".join(f"{n} {v:.4f}" for n, v in baselines.items()) or "-"),
              "# Use with: recsys train --conf <your overlay> --conf <this file>"]
    body = yaml.safe_dump({"train": settings}, sort_keys=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(header) + "\n" + body)
    tmp.replace(path)
