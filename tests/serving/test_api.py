"""The recommendation API through real HTTP: every endpoint, every 4xx, auth, fallback, hot swap under load."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from recsys_lib.api import create_app
from recsys_lib.online import open_store
from tests.serving.conftest import ApiServer

pytestmark = [pytest.mark.serving, pytest.mark.spark]
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def api(served):
    with ApiServer(create_app(served.cfg.model_copy(update={"serve": served.cfg.serve.model_copy(
            update={"reload_poll": None})}))) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def _users(served):
    store = open_store(served.cfg)
    return sorted(k for k, _ in store.scan("user_features"))


def test_known_users_get_model_items_without_their_purchases(api, served):
    store = open_store(served.cfg)
    bought = store.purchases(_users(served))
    buyer = max(bought, key=lambda u: len(bought[u]))
    body = api.get(f"/recommendations/{buyer}", params={"k": 40}).json()
    assert body["source"] == "model" and body["model_version"] == "1" and len(body["items"]) == 40
    assert not {i["item_id"] for i in body["items"]} & bought[buyer]
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    features = api.get(f"/features/user/{buyer}").json()
    assert body["features_as_of"] == features["as_of"]


def test_an_unknown_user_gets_the_popular_list(api, served):
    body = api.get("/recommendations/somebody-new", params={"k": 5}).json()
    popular = json.loads((served.home / "serving" / "current" / "meta.json").read_text())["popular"]
    assert body["source"] == "popular" and [i["item_id"] for i in body["items"]] == popular[:5]
    assert body["features_as_of"] is None


def test_the_category_filter_and_the_batch_endpoint(api, served):
    users = _users(served)[:3]
    one = api.get(f"/recommendations/{users[0]}", params={"k": 3}).json()
    category = one["items"][0]["category_id"]
    filtered = api.get(f"/recommendations/{users[0]}", params={"k": 3, "category": category}).json()
    assert filtered["items"] and {i["category_id"] for i in filtered["items"]} == {category}
    batch = api.post("/recommendations", json={"users": [*users, "nobody"], "k": 3}).json()["results"]
    assert [r["user_id"] for r in batch] == [*users, "nobody"]
    assert [i["item_id"] for i in batch[0]["items"]] == [i["item_id"] for i in one["items"]]
    assert [i["score"] for i in batch[0]["items"]] == pytest.approx([i["score"] for i in one["items"]], rel=1e-5)
    assert batch[3]["source"] == "popular"


def test_features_of_each_entity(api, served):
    user = _users(served)[0]
    row = api.get(f"/features/user/{user}").json()
    assert row["user_id"] == user and "ctr" in row and "top_categories" in row and row["versions"]["base"] >= 1
    item = api.get(f"/features/item/{row['recent_item_ids'][0]}").json()
    assert item["distinct_users"] >= 1 and "users_hll" not in item
    category = row["top_categories"][0]["category_id"]
    pair = api.get(f"/features/user_category/{user}:{category}").json()
    assert (pair["user_id"], pair["category_id"]) == (user, category)
    assert api.get("/features/user/nobody").status_code == 404


@pytest.mark.parametrize(("method", "path", "payload", "status", "says"), [
    ("get", "/recommendations/u1?k=0", None, 400, "k must be between 1 and 1000"),
    ("get", "/recommendations/u1?k=1001", None, 400, "k must be between 1 and 1000"),
    ("get", "/recommendations/u1?k=ten", None, 422, "valid integer"),
    ("get", "/recommendations/" + "x" * 129, None, 400, "longer than 128"),
    ("get", "/recommendations/a%09b", None, 400, "non-printable"),
    ("get", "/recommendations/u1?category=no-such", None, 400, "unknown category 'no-such'"),
    ("post", "/recommendations", {"users": [f"u{i}" for i in range(1001)]}, 400, "1 to 1000 users, got 1001"),
    ("post", "/recommendations", {"users": []}, 400, "1 to 1000 users, got 0"),
    ("post", "/recommendations", {"k": 3}, 422, "users"),
    ("get", "/features/shop/u1", None, 400, "unknown entity 'shop'"),
    ("get", "/features/user_category/u1", None, 400, "user_id:category_id"),
    ("get", "/nowhere", None, 404, "Not Found"),
])
def test_bad_requests_get_a_4xx_that_names_the_problem(api, method, path, payload, status, says):
    response = api.request(method.upper(), path, json=payload)
    assert response.status_code == status, response.text
    assert says in json.dumps(response.json()["detail"])
    assert "Traceback" not in response.text


def test_health_readiness_metrics_and_docs(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    api.get("/recommendations/u1")
    metrics = api.get("/metrics").text
    assert 'recsys_requests_total{endpoint="/recommendations/{user_id}",status="200"}' in metrics
    assert "recsys_request_seconds_bucket" in metrics and "recsys_model_version 1.0" in metrics
    assert "recsys_store_errors 0.0" in metrics
    assert api.get("/docs").status_code == 200 and "/recommendations/{user_id}" in api.get("/openapi.json").text


def test_admin_needs_the_token(api, monkeypatch):
    monkeypatch.delenv("RECSYS_ADMIN_TOKEN", raising=False)
    assert "disabled" in api.post("/admin/reload").json()["detail"]
    monkeypatch.setenv("RECSYS_ADMIN_TOKEN", TOKEN)
    assert api.post("/admin/reload").status_code == 401
    assert api.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = api.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["swapped"] is False


def test_hot_swap_under_load_fails_no_request_and_a_broken_model_keeps_the_old_one(api, served, monkeypatch):
    from tests.serving.helpers import export_untrained

    monkeypatch.setenv("RECSYS_ADMIN_TOKEN", TOKEN)
    users = _users(served)
    stop, results = threading.Event(), []

    def load(n):
        with httpx.Client(base_url=str(api.base_url), timeout=30) as client:
            while not stop.is_set():
                r = client.get(f"/recommendations/{users[n % len(users)]}", params={"k": 5})
                results.append((r.status_code, r.json().get("model_version")))
                n += 3

    with ThreadPoolExecutor(3) as pool:
        for n in range(3):
            pool.submit(load, n)
        time.sleep(0.5)
        export_untrained(served.lake, served.cfg, version="2", seed=1)
        swap = api.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        time.sleep(0.5)
        stop.set()
    assert swap == {"swapped": True, "version": "2", "previous": "1"}
    assert len(results) > 20 and {s for s, _ in results} == {200}
    versions = [v for _, v in results]
    assert versions[0] == "1" and versions[-1] == "2" and set(versions) == {"1", "2"}

    current = served.home / "serving" / "current"
    (current / "meta.json").write_text(json.dumps({"model_version": "3", "exported_at": "later"}))
    (current / "weights.npz").write_bytes(b"not a zip")
    (current / "query_tower").rename(current.with_name("tower-aside"))
    try:
        failed = api.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert failed["swapped"] is False and failed["version"] == "2" and "cannot load" in failed["error"]
        assert api.get("/recommendations/u1").json()["model_version"] == "2"
        assert "recsys_model_reload_failures 1.0" in api.get("/metrics").text
    finally:
        export_untrained(served.lake, served.cfg, version="1")  # leave the session's export as it was
        api.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})


def test_redis_down_answers_from_the_popular_list_and_readiness_follows(served, own_redis):
    from recsys_lib.features.online import load_generation
    from recsys_lib.lake import driver_lake

    cfg = served.cfg.model_copy(update={"online": served.cfg.online.model_copy(
        update={"backend": "redis", "redis_url": own_redis.url})})
    load_generation(open_store(cfg), driver_lake(cfg), cfg)
    user = _users(served)[0]
    with ApiServer(create_app(cfg)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get(f"/recommendations/{user}").json()["source"] == "model"
        own_redis.stop()
        down = client.get(f"/recommendations/{user}")
        assert down.status_code == 200 and down.json()["source"] == "fallback" and down.json()["items"]
        assert client.get("/readyz").status_code == 503
        assert client.get(f"/features/user/{user}").status_code == 503
        assert "recsys_store_errors" in client.get("/metrics").text
        own_redis.start()  # same port, empty: a sync refills it
        load_generation(open_store(cfg), driver_lake(cfg), cfg)
        deadline = time.monotonic() + 15
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "readiness did not come back after Redis did"
            time.sleep(0.2)
        assert client.get(f"/recommendations/{user}").json()["source"] == "model"


def test_the_server_polls_for_a_new_export_when_configured(served):
    from tests.serving.helpers import export_untrained

    cfg = served.cfg.model_copy(update={"serve": served.cfg.serve.model_copy(update={"reload_poll": 0.2})})
    with ApiServer(create_app(cfg)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/recommendations/u1").json()["model_version"] == "1"
        try:
            export_untrained(served.lake, served.cfg, version="7", seed=2)
            deadline = time.monotonic() + 30
            while client.get("/recommendations/u1").json()["model_version"] != "7":
                assert time.monotonic() < deadline, "the poll did not pick up the new export"
                time.sleep(0.1)
            assert "recsys_model_version 7.0" in client.get("/metrics").text
        finally:
            export_untrained(served.lake, served.cfg, version="1")  # leave the session's export as it was


def test_two_replicas_on_one_store_answer_alike_and_both_see_a_write(served):
    """Serving is stateless: two servers on one store give the same answers and both see a new write."""
    import pyarrow.compute as pc

    from recsys_lib.features import USER, entities
    from recsys_lib.features.online import writes
    from recsys_lib.online import Layer

    cfg = served.cfg.model_copy(update={"serve": served.cfg.serve.model_copy(update={"reload_poll": None})})
    entity = entities(cfg.features)[USER]
    user = _users(served)[0]
    with ApiServer(create_app(cfg)) as one, ApiServer(create_app(cfg)) as two, httpx.Client(timeout=30) as client:
        def both(path: str) -> tuple[dict, dict]:
            return client.get(one.url + path).json(), client.get(two.url + path).json()

        first, second = both(f"/recommendations/{user}?k=10")
        assert first["items"] == second["items"] and first["source"] == "model"
        before = both(f"/features/user/{user}")[0]["view_count"]

        # what the stream does after a micro-batch: a pending row for the user, at a newer version
        rows = served.lake.read_arrow(entity.table)
        row = rows.filter(pc.equal(rows["user_id"], user)).slice(0, 1)
        row = row.set_column(row.schema.get_field_index("view_count"), "view_count", pc.add(row["view_count"], 5))
        version = served.lake.version(entity.table)
        store = open_store(cfg)
        try:
            store.write(entity.table, Layer.PENDING, writes(row, entity, cfg), version + 1)
            seen = both(f"/features/user/{user}")
            assert seen[0]["view_count"] == seen[1]["view_count"] == 2 * before + 5  # base + pending, merged
        finally:  # the session's store, restored: the pending row tombstoned at a newer version
            store.write(entity.table, Layer.PENDING, [(user, None, None)], version + 2)
            store.close()
        assert both(f"/features/user/{user}")[1]["view_count"] == before
