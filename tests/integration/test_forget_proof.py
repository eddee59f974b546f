"""The proof of ``recsys forget``: a planted person goes through the whole pipeline (ingest, refresh,
stream, training set, training, promotion, export, batch recommendations, the online store in a real
Redis that persists to RDB and AOF), is forgotten, and then neither their raw id nor their pseudonym
is in any byte under RECSYS_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys_lib.core.config import load_config
from recsys_lib.core.privacy import stored_id
from recsys_lib.datagen.synthetic import GeneratorSpec, generate
from recsys_lib.lake import open_lake
from recsys_lib.pipelines.evaluate import run_promote
from recsys_lib.pipelines.features import run_refresh
from recsys_lib.pipelines.forget import run_forget
from recsys_lib.pipelines.ingest import run_ingest
from recsys_lib.pipelines.serve import run_batch_recommendations, run_export
from recsys_lib.pipelines.train import run_train
from recsys_lib.pipelines.training import run_training_set
from recsys_lib.streaming.job import run_stream
from tests.redis_server import RedisServer, need_redis
from tests.spark.helpers import files_holding, raw_line, write_lines

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.tf, pytest.mark.serving]
PLANTED = "proof.person+91c4e2@shop.example"


def _plant(folder: Path, name: str, day: str, first: int) -> None:
    """The planted person's session on ``day``: views, clicks, carts and a purchase over six items."""
    kinds = ["view", "click", "add_to_cart", "purchase"]
    write_lines(folder, name, [raw_line(f"proof-{first + n}", PLANTED, kinds[n % 4], f"{day}T1{n % 10}:0{n % 6}:00Z",
                                        f"i{n % 6}", f"c{n % 3}", 5.0 + n % 6) for n in range(24)])


@pytest.mark.timeout(900)
def test_a_forgotten_person_is_in_no_byte_under_the_home(spark, tmp_path, shared_id_key):
    need_redis()
    home = tmp_path / "home"
    server = RedisServer(home / "redis", persist=True)
    server.start()
    try:
        cfg = load_config(overrides=[f"home={home}", "spark.master=local[2]", "lake.retry_backoff=1ms",
                                     "online.backend=redis", f"online.redis_url={server.url}", "train.epochs=1",
                                     "train.batch_size=64"])
        lake = open_lake(spark, cfg)
        landing = Path(cfg.landing_dir)
        generate(GeneratorSpec(users=80, items=200, days=6, events=4000, bad_fraction=0.02, seed=11), landing / "a")
        _plant(landing / "a" / "date=2024-01-02", "planted.jsonl", "2024-01-02", 0)
        run_ingest(spark, lake, cfg, str(landing / "a"))
        run_refresh(spark, lake, cfg)  # loads the online store
        _plant(landing / "b", "live.jsonl", "2024-01-03", 100)
        reports = run_stream(spark, lake, cfg, str(landing / "b"), available_now=True)
        assert sum(r["new_events"] for r in reports) == 24
        run_training_set(spark, lake, cfg, list(cfg.train.label_types))
        trained = run_train(spark, lake, cfg, say=lambda _m: None)
        run_promote(spark, lake, cfg, version=trained["version"], say=lambda _m: None)
        run_export(spark, lake, cfg, say=lambda _m: None)
        run_batch_recommendations(spark, lake, cfg, say=lambda _m: None)
        import redis

        redis.Redis.from_url(server.url).save()  # an RDB snapshot that holds the person

        pseudonym = stored_id(cfg, PLANTED)
        # the scan finds the person in every place it is about to be erased from
        for where, needle in [("lake", pseudonym), ("landing", PLANTED), ("redis", pseudonym),
                              ("mlflow", pseudonym), ("serving", pseudonym)]:
            assert files_holding(home / where, [needle]), f"{where} does not hold {needle!r} before the forget"
        assert not files_holding(home / "lake", [PLANTED])  # pseudonyms from the edge on

        done = run_forget(spark, lake, cfg, [PLANTED])
        assert done.rows_deleted["events"] == 48 and done.rows_deleted["landing_lines"] == 48
        assert done.rows_deleted["model_bundles"] >= 2  # the registered model's and the export's
        assert done.online_removed > 0

        assert files_holding(home, [PLANTED, pseudonym]) == []
        client = redis.Redis.from_url(server.url)
        assert [k for k in client.scan_iter(count=5000) if pseudonym.encode() in k] == []
    finally:
        server.stop()
