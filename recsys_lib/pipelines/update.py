"""The model-update loop: ``recsys train --continuous`` (embedded) and the ``recsys_incremental`` DAG.

One cycle (:func:`run_update`):

1. the point-in-time training set is rebuilt, so the newest labels are in it and the holdout
   is the newest ``train.holdout_days``;
2. a warm-start run from the champion on the newest ``train.warm_start_days`` (a full training
   run while there is no champion yet), registered in MLflow;
3. the promotion gate on that newest holdout, against the champion (and, with
   ``evaluate.gate_baselines``, the strongest baseline): a worse model is never promoted;
4. ``export`` of the champion when it changed; a running ``recsys serve`` polls the export
   (``serve.reload_poll``) and hot-swaps it.

A cycle holds the ``model-update`` lease for its whole length, taken without waiting: a second
update (another loop, a DAG run, an operator) exits at once, naming the one that runs.
:func:`run_continuous` starts a cycle every ``train.update_every``; a cycle that fails is logged
and counted, and the loop goes on.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from pyspark.sql import SparkSession

from recsys_lib.core.config import RecsysConfig
from recsys_lib.lake import Lake, LakeError

log = logging.getLogger(__name__)
Say = Callable[[str], None]
#: The lease that keeps model updates one at a time.
UPDATE_LEASE = "model-update"


def run_update(spark: SparkSession, lake: Lake, cfg: RecsysConfig, *, say: Say = print) -> dict[str, Any]:
    """One update cycle (see the module docstring); its summary."""
    from recsys_lib.models import tracking
    from recsys_lib.pipelines.evaluate import run_promote
    from recsys_lib.pipelines.serve import run_export
    from recsys_lib.pipelines.train import run_train
    from recsys_lib.pipelines.training import run_training_set

    started = time.monotonic()
    cycle = f"update-{uuid.uuid4().hex[:8]}"
    with lake.writing([UPDATE_LEASE], f"model update {cycle}", wait=0):
        built = run_training_set(spark, lake, cfg, list(cfg.train.label_types))
        client = tracking.configure(cfg)
        warm = tracking.model_version(client, cfg.mlflow.registered_model, alias=tracking.CHAMPION) is not None
        trained = run_train(spark, lake, cfg, warm_start=warm, say=say)
        gate = run_promote(spark, lake, cfg, version=trained["version"], say=say)
        exported = run_export(spark, lake, cfg, say=say) if gate["promoted"] else None
    return {"cycle": cycle, "training_rows": built["rows"], "warm_start": warm, "version": trained["version"],
            "promoted": gate["promoted"], "reason": gate["reason"],
            "exported": exported["version"] if exported else None, "cutoff": trained["cutoff"],
            "seconds": round(time.monotonic() - started, 2)}


def run_continuous(spark: SparkSession, lake: Lake, cfg: RecsysConfig, *, cycles: int | None = None,
                   say: Say = print, sleep: Callable[[float], None] = time.sleep) -> list[dict[str, Any]]:
    """Run :func:`run_update` every ``train.update_every`` (``cycles`` times, or until interrupted)."""
    done: list[dict[str, Any]] = []
    every = cfg.train.update_every
    while cycles is None or len(done) < cycles:
        began = time.monotonic()
        try:
            summary = run_update(spark, lake, cfg, say=say)
        except (LakeError, ValueError) as exc:  # a held lease, a lake or input problem: next cycle tries again
            log.warning("model update failed: %s: %s", type(exc).__name__, exc)
            summary = {"failed": f"{type(exc).__name__}: {exc}"}
        done.append(summary)
        say(f"update {len(done)}: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
        if cycles is not None and len(done) >= cycles:
            break
        sleep(max(0.0, every - (time.monotonic() - began)))
    return done
