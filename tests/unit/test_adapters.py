from __future__ import annotations

import csv
import json

import pytest

from recsys_lib.datagen.adapters import adapt_movielens, adapt_taobao
from tests.conftest import shared_dataset

pytestmark = pytest.mark.unit


def _records(out):
    return [json.loads(line) for p in sorted(out.rglob("*.jsonl")) for line in p.read_text().splitlines()]


def test_movielens_mapping_by_hand(tmp_path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,5.0,964982703\n1,20,4.0,964982224\n2,10,3.5,1000000000\n"
        "2,30,2.0,1000000001\n"
    )
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n10,A (1995),Comedy|Drama\n20,"B, The (1996)",Action\n30,C,(no genres listed)\n'
    )
    result = adapt_movielens(tmp_path / "ratings.csv", tmp_path / "movies.csv", tmp_path / "out")
    assert (result.source_rows, result.events, result.files) == (4, 4, 2)
    recs = {r["event_id"]: r for r in _records(tmp_path / "out")}
    assert recs["ml-1-10"] == {"event_id": "ml-1-10", "event_ts": 964982703000, "user_id": "1",
                               "event_type": "purchase", "item_id": "10", "category_id": "Comedy", "quantity": 1}
    assert recs["ml-1-20"]["event_type"] == "add_to_cart"
    assert recs["ml-2-10"]["event_type"] == "click"
    assert recs["ml-2-30"]["event_type"] == "view"
    assert recs["ml-2-30"]["category_id"] is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["date=2000-07-30", "date=2001-09-09"]


def test_taobao_mapping_by_hand(tmp_path):
    (tmp_path / "ub.csv").write_text("1,100,7,pv,1511544070\n1,100,7,buy,1511544071\n2,200,8,fav,1511600000\n"
                                     "2,200,8,cart,1511600001\n3,300,9,share,1511600002\n")
    result = adapt_taobao(tmp_path / "ub.csv", tmp_path / "out")
    assert (result.source_rows, result.events, result.skipped) == (5, 4, 1)
    recs = {r["event_id"]: r for r in _records(tmp_path / "out")}
    assert [recs[f"tb-{i}"]["event_type"] for i in range(1, 5)] == ["view", "purchase", "click", "add_to_cart"]
    assert recs["tb-1"] == {"event_id": "tb-1", "event_ts": 1511544070000, "user_id": "1", "event_type": "view",
                            "item_id": "100", "category_id": "7", "quantity": None}


def test_real_movielens_converts_every_rating(tmp_path):
    folder = shared_dataset("ml-latest-small")
    with open(folder / "ratings.csv", newline="") as fh:
        rows = sum(1 for _ in csv.reader(fh)) - 1  # counted independently of pandas
    result = adapt_movielens(folder / "ratings.csv", folder / "movies.csv", tmp_path / "out")
    assert result.source_rows == result.events == rows
    assert rows > 100_000
    records = _records(tmp_path / "out")
    assert len(records) == rows
    assert len({r["event_id"] for r in records}) == rows


def test_real_taobao_sample_converts(tmp_path):
    csv = shared_dataset("taobao-userbehavior-sample", "UserBehavior.csv")
    result = adapt_taobao(csv, tmp_path / "out")
    assert result.source_rows == 4_321
    assert result.events + result.skipped == 4_321
    kinds = {}
    for r in _records(tmp_path / "out"):
        kinds[r["event_type"]] = kinds.get(r["event_type"], 0) + 1
    assert kinds == {"view": 3_926, "add_to_cart": 190, "click": 128, "purchase": 77}
