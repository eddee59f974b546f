"""Pseudonyms at the edge: Spark, Arrow and Python give the same pseudonym; ingest (batch and stream) stores
only pseudonyms and masked raw lines; the API takes raw ids."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_lib.core.config import load_config
from recsys_lib.core.privacy import KEY_ENV, Pseudonyms, mask_raw, mask_raw_arrow, mask_raw_column, pseudonyms_for
from recsys_lib.lake import open_lake
from recsys_lib.pipelines.ingest import run_ingest
from recsys_lib.streaming.job import run_stream
from tests.spark.helpers import raw_line, write_lines

pytestmark = pytest.mark.spark
KEY = "a-test-key-of-forty-characters-0123456789"


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40), min_size=1,
                    max_size=20),
       key=st.sampled_from([b"short", KEY.encode(), b"\xaa" * 131]))
def test_spark_arrow_and_python_give_the_same_pseudonym(spark, ids, key):
    pseudonyms = Pseudonyms(key)
    df = spark.createDataFrame([(i,) for i in ids], "id string")
    by_spark = [r[0] for r in df.select(pseudonyms.column(df["id"])).collect()]
    assert by_spark == pseudonyms.many(ids) == pseudonyms.arrow(pa.array(ids)).to_pylist()


def test_spark_masks_raw_lines_as_python_does(spark):
    lines = ['{"user_id": "alice", "event_type": "view"}', '{"user_id":42}', '{"user_id": "a\\"b", "x": 1}',
             "garbage", '{"event_id": "e", "user_id": "cut short']
    df = spark.createDataFrame([(line,) for line in lines], "value string")
    assert [r[0] for r in df.select(mask_raw_column(df["value"])).collect()] == [mask_raw(line) for line in lines] \
        == mask_raw_arrow(pa.array(lines)).to_pylist()


@pytest.fixture
def private(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    return load_config(overrides=[f"home={tmp_path / 'home'}", "spark.master=local[2]", "lake.retry_backoff=1ms",
                                  f"streaming.checkpoint_dir={tmp_path / 'checkpoint'}"])


def _drop(folder):
    write_lines(folder, "a.jsonl", [raw_line("e1", "alice@shop.example", "view", "2024-01-01T10:00:00Z"),
                                    raw_line("e2", "bob-7781", "purchase", "2024-01-01T11:00:00Z", "i2", "c2", 3.0),
                                    '{"event_id": "e3", "user_id": "carol-secret", "event_type": "teleport"}'])
    return folder


@pytest.mark.parametrize("engine", ["batch ingest (Spark)", "stream (driver-local Arrow)"])
def test_only_pseudonyms_and_masked_lines_are_stored(spark, private, tmp_path, engine):
    lake = open_lake(spark, private)
    folder = _drop(tmp_path / "landing")
    if engine.startswith("batch"):
        run_ingest(spark, lake, private, str(folder))
    else:
        reports = run_stream(spark, lake, private, str(folder), available_now=True)
        assert {r["ingest_engine"] for r in reports} == {"local"}
    ids = pseudonyms_for(private)
    stored = {r["event_id"]: r["user_id"] for r in lake.read("events").collect()}
    assert stored == {"e1": ids.of("alice@shop.example"), "e2": ids.of("bob-7781")}
    quarantined = [r["raw"] for r in lake.read("events_quarantine").collect()]
    assert quarantined == ['{"event_id": "e3", "user_id": "***", "event_type": "teleport"}']
    features = {r["user_id"] for r in lake.read("user_features").collect()} if lake.exists("user_features") else set()
    assert features <= set(stored.values())  # the stream folds pseudonyms too


def test_the_api_takes_the_shops_raw_ids(spark, tmp_path, monkeypatch):
    import httpx

    from recsys_lib.api import create_app
    from tests.serving.conftest import ApiServer, Served

    monkeypatch.setenv(KEY_ENV, KEY)
    served = Served(spark, tmp_path / "home", pseudonymize=True)
    raw = "u3"  # the generator's ids are u0, u1, ...
    pseudonym = pseudonyms_for(served.cfg).of(raw)
    assert served.lake.read("user_features").where(f"user_id = '{pseudonym}'").count() == 1
    with ApiServer(create_app(served.cfg)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        row = client.get(f"/features/user/{raw}")
        assert row.status_code == 200 and row.json()["user_id"] == raw
        assert client.get(f"/features/user/{pseudonym}").status_code == 404  # hashed again: nobody
        answer = client.get(f"/recommendations/{raw}", params={"k": 3}).json()
        assert answer["source"] == "model" and answer["user_id"] == raw
