"""On one small lake: ``recsys evaluate --seeds`` (per-seed results, warm/cold groups, bootstrap
intervals, an MLflow run whose per-user artifact names no user, baselines scored as ``recsys evaluate``
scores them), and the model-update loop (``recsys train --continuous``: one update at a time, a worse
model never promoted, a new champion exported)."""

from __future__ import annotations

import csv
import json

import mlflow
import pytest

from recsys_lib.core.config import load_config
from recsys_lib.datagen.synthetic import GeneratorSpec, generate
from recsys_lib.lake import open_lake
from recsys_lib.pipelines.compare import COMPARED, run_seeds
from recsys_lib.pipelines.evaluate import run_evaluate
from recsys_lib.pipelines.features import run_refresh
from recsys_lib.pipelines.ingest import run_ingest
from recsys_lib.pipelines.training import run_training_set

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.tf]


@pytest.fixture(scope="module")
def small_lake(spark, tmp_path_factory):
    """A lake with features and a training set, no model yet."""
    root = tmp_path_factory.mktemp("quality")
    cfg = load_config(overrides=[f"home={root / 'home'}", "spark.master=local[2]", "train.epochs=1",
                                 "train.warm_start_epochs=1", "train.batch_size=128", "online.enabled=false"])
    lake = open_lake(spark, cfg)
    generate(GeneratorSpec(users=150, items=200, days=8, events=6000, bad_fraction=0.0, seed=3), root / "raw")
    run_ingest(spark, lake, cfg, str(root / "raw"))
    run_refresh(spark, lake, cfg)
    run_training_set(spark, lake, cfg, list(cfg.train.label_types))
    return cfg, lake


@pytest.mark.timeout(900)
def test_seeds_report_and_its_baselines_agree_with_evaluate(spark, small_lake, tmp_path):
    cfg, lake = small_lake

    report = run_seeds(spark, lake, cfg, 2, report_json=str(tmp_path / "seeds.json"), say=lambda _m: None)
    assert report["seeds"] == [cfg.train.seed, cfg.train.seed + 1]
    users = report["users"]
    assert users["warm"] + users["cold"] == users["holdout"] > 0
    tower = report["models"]["two_tower"]
    for metric in COMPARED:
        assert len(tower[metric]["per_seed"]) == 2
        assert tower[metric]["mean"] == pytest.approx(sum(tower[metric]["per_seed"]) / 2)
    baselines = set(report["models"]) - {"two_tower"}
    assert baselines == {"popularity", "cooccurrence", "item_knn", "ease", "als"} == set(report["difference"])
    for name in baselines:
        for metric in COMPARED:
            d = report["difference"][name][metric]
            assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]
            # the difference of the per-user means is the difference of the means
            assert d["mean"] == pytest.approx(tower[metric]["mean"] - report["models"][name][metric]["mean"])
    assert json.loads((tmp_path / "seeds.json").read_text())["models"].keys() == report["models"].keys()

    # the same tuned baselines, scored by `recsys evaluate` (no model registered: baselines only)
    plain = run_evaluate(spark, lake, cfg, say=lambda _m: None)
    for name in ("popularity", "item_knn", "ease"):
        for metric in COMPARED:
            assert report["models"][name][metric]["mean"] == pytest.approx(plain["models"][name][metric])

    runs = mlflow.search_runs(experiment_names=[cfg.mlflow.experiment], filter_string="run_name = 'evaluate-seeds'")
    assert len(runs) == 1
    folder = mlflow.artifacts.download_artifacts(run_id=runs["run_id"][0], artifact_path="evaluation",
                                                 dst_path=str(tmp_path / "artifacts"))
    with open(f"{folder}/per_user.csv") as fh:
        header = next(csv.reader(fh))
    assert header[:2] == ["row", "warm"] and "user_id" not in header


@pytest.mark.timeout(900)
def test_the_update_loop_runs_one_at_a_time_and_never_promotes_a_worse_model(spark, small_lake):
    from recsys_lib.models import tracking
    from recsys_lib.pipelines.update import UPDATE_LEASE, run_continuous
    from recsys_lib.serving.model import serving_dir

    cfg, lake = small_lake
    with lake.writing([UPDATE_LEASE], "an update started elsewhere", wait=0):
        blocked = run_continuous(spark, lake, cfg, cycles=1, say=lambda _m: None, sleep=lambda _s: None)
    assert "LeaseHeld" in blocked[0]["failed"] and "an update started elsewhere" in blocked[0]["failed"]

    waits: list[float] = []
    first, second = run_continuous(spark, lake, cfg, cycles=2, say=lambda _m: None, sleep=waits.append)
    assert len(waits) == 1 and 0 < waits[0] <= cfg.train.update_every  # one pause, between the two cycles
    assert (first["warm_start"], first["promoted"], first["exported"]) == (False, True, first["version"])
    assert second["warm_start"] and second["version"] != first["version"]
    client = tracking.configure(cfg)
    champion = tracking.model_version(client, cfg.mlflow.registered_model, alias=tracking.CHAMPION)
    exported = json.loads((serving_dir(cfg) / "meta.json").read_text())["model_version"]
    if second["promoted"]:
        assert "beats champion" in second["reason"] and champion.version == exported == second["version"]
    else:  # the worse (or equal) model stays unserved
        assert "does not beat" in second["reason"] and second["exported"] is None
        assert champion.version == exported == first["version"]


@pytest.mark.timeout(900)
def test_tune_scores_trials_on_the_inner_split_and_writes_an_overlay_that_loads(spark, small_lake, tmp_path):
    from datetime import timedelta

    from recsys_lib.core.config import SearchRange, TuneConfig
    from recsys_lib.pipelines.train import pinned_inputs
    from recsys_lib.pipelines.tune import run_tune

    cfg, lake = small_lake
    space = {"temperature": SearchRange(choices=(0.1, 1.0)),
             "learning_rate": SearchRange(low=0.001, high=0.01, log=True)}
    tcfg = cfg.model_copy(update={"tune": TuneConfig(trials=2, max_epochs=2, patience=1, prune=False, space=space,
                                                     min_validation_users=5)})
    tuned = run_tune(spark, lake, tcfg, out=str(tmp_path / "tuned.yaml"), say=lambda _m: None)

    _, _, events, cutoff = pinned_inputs(spark, lake, cfg)
    events.unpersist()
    assert tuned["inner_cutoff"] == (cutoff - timedelta(days=cfg.evaluate.tune_days)).isoformat()
    overlay = load_config([tmp_path / "tuned.yaml"]).train
    assert overlay.temperature in (0.1, 1.0) and 0.001 <= overlay.learning_rate <= 0.01
    assert overlay.epochs in (1, 2)
    assert set(tuned["baselines"]) == {"popularity", "cooccurrence", "item_knn", "ease", "als"}

    # every trial is an MLflow run under the tune run; the overlay is the best run's settings and best epoch
    client = mlflow.tracking.MlflowClient()
    children = client.search_runs([client.get_run(tuned["run_id"]).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{tuned['run_id']}'")
    assert len(children) == 2
    best = {}
    for run in children:
        history = [m.value for m in client.get_metric_history(run.info.run_id, "recall_at_50")]
        assert 1 <= len(history) <= 2
        if max(history) > best.get("value", -1.0):
            best = {"value": max(history), "epoch": history.index(max(history)) + 1, "params": run.data.params}
    assert best["value"] == pytest.approx(tuned["value"])
    assert overlay.epochs == best["epoch"]
    assert float(best["params"]["train.temperature"]) == overlay.temperature

    # too few validation users to tune on: refused, naming the setting (the 150-user lake has far fewer than 10**6)
    few = cfg.model_copy(update={"tune": TuneConfig(trials=1, space=space, min_validation_users=10**6)})
    with pytest.raises(ValueError, match="fewer than tune.min_validation_users=1000000"):
        run_tune(spark, lake, few, out=str(tmp_path / "never.yaml"), say=lambda _m: None)
    assert not (tmp_path / "never.yaml").exists()


@pytest.mark.timeout(900)
def test_train_with_the_ranking_stage_reports_both_and_keeps_the_ranker_in_the_bundle(spark, small_lake, tmp_path):
    from recsys_lib.models import tracking
    from recsys_lib.models.bundle import Bundle
    from recsys_lib.models.ranking import load_ranker
    from recsys_lib.pipelines.train import run_train

    cfg, lake = small_lake
    ranked = cfg.model_copy(update={"ranking": cfg.ranking.model_copy(update={
        "enabled": True, "candidates": 50, "epochs": 1, "batch_size": 256, "days": 3})})
    out = run_train(spark, lake, ranked, say=lambda _m: None)
    report = out["ranking"]
    assert report["pairs"] == report["labels"] * (1 + ranked.ranking.negatives)  # 200 items: always 4 to draw
    # retrieval alone, in the report, is the model's own holdout score (same holdout, filters and metrics)
    assert report["retrieval"]["recall@50"] == pytest.approx(out["metrics"]["recall@50"], abs=1e-3)
    assert report["used"] == (report["retrieval_and_ranking"]["recall@50"] > report["retrieval"]["recall@50"])
    bundle = Bundle(tracking.model_version(tracking.configure(ranked), ranked.mlflow.registered_model,
                                           version=out["version"]).bundle)
    assert bundle.meta["ranking"]["used"] == report["used"]
    reloaded = load_ranker(bundle.path / "ranker").spec  # the registered model version carries the ranker
    assert (reloaded.cross_layers, reloaded.deep_layers) == (ranked.ranking.cross_layers,
                                                            list(ranked.ranking.deep_layers))

    # the gate and `recsys evaluate` judge the version as it is served: after a save and reload, re-ranked
    # exactly when the ranker is used, and scoring what training reported
    from recsys_lib.pipelines.evaluate import current_holdout
    from recsys_lib.pipelines.ranking import served_metrics

    judged = served_metrics(bundle, current_holdout(spark, lake, ranked), ranked)
    expected = report["retrieval_and_ranking"] if report["used"] else report["retrieval"]
    for metric in ("recall@50", "ndcg@10"):
        assert judged[metric] == pytest.approx(expected[metric], abs=1e-3)
