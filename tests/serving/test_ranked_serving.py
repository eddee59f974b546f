"""A bundle whose ranking stage was used is served re-ranked: the API's order is the offline evaluation's
re-ranking (:func:`recsys_lib.models.ranking.rerank`) of retrieval's top candidates; a bundle whose ranker
lost is served by retrieval alone."""

from __future__ import annotations

import json
import shutil

import httpx
import numpy as np
import pytest

from recsys_lib.api import create_app
from recsys_lib.online import open_store
from recsys_lib.serving.model import ServedModel, Source, serving_dir
from recsys_lib.serving.recommender import Recommender
from tests.serving.conftest import ApiServer

pytestmark = [pytest.mark.serving, pytest.mark.spark, pytest.mark.tf]
CANDIDATES = 30


def _with_ranker(served, folder, *, used: bool):
    """A copy of the served bundle with a random-weight ranker and its report's ``used`` flag."""
    import tensorflow as tf

    from recsys_lib.models.bundle import Bundle
    from recsys_lib.models.ranking import RankerSpec, build_ranker, save_ranker, width

    shutil.copytree(serving_dir(served.cfg), folder)
    bundle = Bundle(folder)
    dim = len(bundle.items["embedding"].iloc[0])
    tf.keras.utils.set_random_seed(5)
    inputs = width(dim, len(bundle.spec.query_numeric), len(bundle.spec.item_numeric))
    save_ranker(build_ranker(RankerSpec(inputs, 1, [8])), folder / "ranker")
    meta = json.loads((folder / "meta.json").read_text())
    meta["ranking"] = {"used": used, "candidates": CANDIDATES, "metric": "recall@50"}
    (folder / "meta.json").write_text(json.dumps(meta))
    return Source(folder, "7", f"ranked-{used}")


def test_the_api_serves_the_rankers_order_of_the_retrieval_candidates(served, tmp_path):
    from recsys_lib.models.data import numeric
    from recsys_lib.models.ranking import load_ranker, rerank
    from recsys_lib.models.two_tower import normalise_numeric

    store = open_store(served.cfg)
    rec = Recommender(served.cfg, store, use_registry=False)
    assert rec.reload(_with_ranker(served, tmp_path / "ranked", used=True))["swapped"]
    users = sorted(k for k, _ in store.scan("user_features"))[:5]
    bought = store.purchases(users)
    with ApiServer(create_app(served.cfg, recommender=rec)) as server:
        answers = [httpx.get(f"{server.url}/recommendations/{u}", params={"k": 10}, timeout=30).json()
                   for u in users]

    model = rec.model
    states = [rec.features("user", u) for u in users]
    queries = model.encode(states)
    spec = model.bundle.spec
    q_numeric = normalise_numeric(numeric(model._query_table(states), spec.query_numeric), spec.query_mean,
                                  spec.query_std)
    exact = queries @ model.embeddings.T  # retrieval's candidates: the exact top CANDIDATES (a brute-force index)
    top = np.argsort(-exact, axis=1, kind="stable")[:, :CANDIDATES]
    excluded = [[model.position[i] for i in bought.get(u, set()) if i in model.position] for u in users]
    expected = rerank(load_ranker(tmp_path / "ranked" / "ranker"), top, queries, q_numeric, model.embeddings,
                      model.item_numeric, excluded)
    for user, answer, row, banned in zip(users, answers, expected, excluded, strict=True):
        assert answer["source"] == "model" and answer["ranked"] is True and answer["model_version"] == "7"
        want = [str(model.item_ids[i]) for i in row if i not in banned][:10]
        assert [i["item_id"] for i in answer["items"]] == want, user
        scores = [i["score"] for i in answer["items"]]
        assert scores == sorted(scores, reverse=True)
    # the ranker changed the order somewhere (else this test could not tell re-ranking from retrieval)
    assert any(list(row[:10]) != list(t[:10]) for row, t in zip(expected, top, strict=True))


def test_a_ranker_that_lost_to_retrieval_is_not_served(served, tmp_path):
    model = ServedModel.load(_with_ranker(served, tmp_path / "lost", used=False))
    assert model.ranker is None
    rec = Recommender(served.cfg, open_store(served.cfg), use_registry=False)
    rec.reload(model.source)
    user = sorted(k for k, _ in open_store(served.cfg).scan("user_features"))[0]
    answer = rec.recommend([user], 5)[0]
    assert answer["ranked"] is False and answer["source"] == "model"


def test_a_bundle_whose_items_lack_the_rankers_inputs_is_served_by_retrieval_and_says_why(served, tmp_path, caplog):
    import pandas as pd

    source = _with_ranker(served, tmp_path / "old", used=True)
    items = pd.read_parquet(source.path / "items.parquet")
    items.drop(columns=["i_view_count"]).to_parquet(source.path / "items.parquet", index=False)  # an older export
    with caplog.at_level("WARNING"):
        model = ServedModel.load(source)
    assert model.ranker is None and "lacks the numeric inputs ['i_view_count']" in caplog.text


def test_recsys_recommend_ranks_like_the_api(served, spark, tmp_path):
    from recsys_lib.pipelines.serve import run_recommend

    ranked = _with_ranker(served, tmp_path / "ranked", used=True)
    export = serving_dir(served.cfg)
    kept = tmp_path / "export-kept"
    shutil.move(export, kept)
    shutil.copytree(ranked.path, export)  # the ranked bundle as the export `recsys recommend` and the API load
    try:
        store = open_store(served.cfg)
        rec = Recommender(served.cfg, store, use_registry=False)
        assert rec.reload(Source(export, "1", "ranked-export"))["swapped"] and rec.model.ranker is not None
        users = sorted(k for k, _ in store.scan("user_features"))[:3]
        answers = rec.recommend(users, 10)
        cli = [run_recommend(spark, served.lake, served.cfg, u, k=10) for u in users]
    finally:
        shutil.rmtree(export)
        shutil.move(kept, export)
    for user, answer, table in zip(users, answers, cli, strict=True):
        assert answer["ranked"] is True and set(table["source"]) == {"two_tower + ranker"}
        assert table["item_id"].tolist() == [i["item_id"] for i in answer["items"]], user
        assert np.allclose(table["score"].to_numpy(), [i["score"] for i in answer["items"]], rtol=1e-4)
