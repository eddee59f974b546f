"""The demo's live part: the stream runs while new events for one user arrive.

A producer writes a small file every few seconds (atomically: hidden temp file,
then rename) with events just after the data's watermark: the chosen user
browses, clicks and buys in a category they had not favoured, plus background
traffic. Before and after, the demo prints that user's features and top items,
so the change made by the stream is visible.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from recsys_lib.core.config import RecsysConfig
from recsys_lib.core.privacy import stored_id
from recsys_lib.datagen.writer import records_to_lines, write_lines
from recsys_lib.features import entities, load_features
from recsys_lib.features.layers import read_states
from recsys_lib.lake import Lake
from recsys_lib.pipelines.serve import feature_time, run_recommend
from recsys_lib.streaming.job import last_batches, run_stream

FUNNEL = ("view", "view", "click", "add_to_cart", "purchase")


def _user_view(spark: SparkSession, cfg: RecsysConfig, user: str) -> str:
    row = (load_features(spark, "user", feature_time(spark, cfg), cfg=cfg)
           .where(F.col("user_id") == stored_id(cfg, user))
           .select("view_count", "purchase_count", "view_decayed_1h", "recent_item_ids", "top_categories").first())
    if row is None:
        return "      (no features)"
    cats = ", ".join(f"{c['category_id']}:{c['weight']:.1f}" for c in (row["top_categories"] or [])[:3])
    return (f"      views {row['view_count']}, purchases {row['purchase_count']}, views decayed 1h "
            f"{row['view_decayed_1h']:.2f}, recent {list(row['recent_item_ids'] or [])[:4]}, top categories {cats}")


def live_stream(spark: SparkSession, lake: Lake, cfg: RecsysConfig, user: str, *, seconds: float = 60.0,
                say: Callable[[str], None] = print) -> None:
    """Run the stream for about ``seconds`` while a producer lands events; show ``user`` before and after.

    ``user`` is the shop's raw id: the producer writes it into the events, as a shop would.
    """
    items = read_states(lake, entities(cfg.features)["item"], cfg.features).select(
        "item_id", F.col("latest_category.value").alias("category_id"),
        F.col("latest_price.value").alias("price")).toPandas()
    if not isinstance(items, pd.DataFrame):
        raise TypeError(f"toPandas returned {type(items).__name__}, not a DataFrame")
    weights = {c["category_id"]: c["weight"] for c in (load_features(spark, "user", cfg=cfg)
                                                       .where(F.col("user_id") == stored_id(cfg, user))
                                                       .select("top_categories")
                                                       .first() or [[]])[0] or []}
    known = items.dropna(subset=["category_id"])
    # the category the user cares least about (one outside their top categories when there is one)
    target_cat = min(known["category_id"].unique(), key=lambda c: (weights.get(c, 0.0), c))
    target_items = known[known["category_id"] == target_cat].head(6)
    others = items.sample(min(len(items), 200), random_state=1)
    say(f"      user {user} before (their new interest will be category {target_cat}):")
    say(_user_view(spark, cfg, user))
    say(_top(spark, lake, cfg, user))
    server = ApiProcess(cfg) if cfg.online.enabled else None
    if server is not None:
        say(server.curl(user))
    live = Path(cfg.landing_dir) / "live"
    live.mkdir(parents=True, exist_ok=True)
    clock = [feature_time(spark, cfg)]
    stream = threading.Thread(target=run_stream, args=(spark, lake, cfg, str(live)), kwargs={"trigger_seconds": 1.0},
                              daemon=True)
    stream.start()
    started, files, sent = time.monotonic(), 0, 0
    while time.monotonic() - started < seconds:
        rows = []
        for n in range(30):
            clock[0] += timedelta(seconds=5)
            if n % 3 == 0:
                item = target_items.iloc[(files + n) % len(target_items)]
                etype, who = FUNNEL[(files + n) % len(FUNNEL)], user
            else:
                item, etype, who = others.iloc[(files * 30 + n) % len(others)], "view", f"u-live-{n % 7}"
            rows.append({"event_id": f"live-{uuid.uuid4().hex}", "event_ts": clock[0].isoformat(), "user_id": who,
                         "event_type": etype, "item_id": item["item_id"], "category_id": item["category_id"],
                         "price": item["price"], "quantity": 1 if etype in ("add_to_cart", "purchase") else None})
        day = clock[0].date().isoformat()
        folder = live / f"date={day}"
        folder.mkdir(exist_ok=True)
        frame = pd.DataFrame(rows).astype({"quantity": "Int64"})  # 1 or null, never 1.0 (ill-typed)
        write_lines(folder / f"live-{files:04d}.jsonl", records_to_lines(frame), compress=False)
        files, sent = files + 1, sent + len(rows)
        time.sleep(5)
    _drain(cfg, sent, timeout=120)
    for query in spark.streams.active:
        query.stop()
    stream.join(timeout=60)
    batches = last_batches(cfg, 1000)
    lags = sorted(b["freshness_lag_max_s"] for b in batches if b.get("freshness_lag_max_s") is not None)
    say(f"      landed {files} files ({sent} events); the stream ran {len(batches)} micro-batches, "
        f"freshness lag median {lags[len(lags) // 2] if lags else float('nan'):.1f}s, max "
        f"{lags[-1] if lags else float('nan'):.1f}s")
    say(f"      user {user} after:")
    say(_user_view(spark, cfg, user))
    say(_top(spark, lake, cfg, user))
    if server is not None:
        say(server.curl(user))
        server.stop()
        say("      (the API server stopped; start it yourself with `recsys serve`)")


class ApiProcess:
    """``recsys serve`` over ``cfg``'s data (plus ``overrides``), in a child process on a free loopback port."""

    def __init__(self, cfg: RecsysConfig, overrides: Sequence[str] = (), timeout: float = 120.0) -> None:
        import socket
        import subprocess
        import sys

        import httpx

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        sets = [f"home={cfg.home_dir}", *overrides, f"serve.port={self.port}", "serve.host=127.0.0.1"]
        started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "recsys_lib.cli", "serve",
                                      *[a for s in sets for a in ("--set", s)]],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    self.start_seconds = round(time.monotonic() - started, 2)
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"`recsys serve` did not become ready on port {self.port}")
            time.sleep(0.3)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def curl(self, user: str) -> str:
        """The curl command for ``user``'s top 5 and what the server answered."""
        import httpx

        response = httpx.get(f"{self.url}/recommendations/{user}", params={"k": 5}, timeout=30)
        command = f"      $ curl '{self.url}/recommendations/{user}?k=5'\n"
        body = response.json()
        if response.status_code != 200 or "items" not in body:
            return command + f"      HTTP {response.status_code}: {body.get('detail')}"
        items = ", ".join(f"{i['item_id']} ({i['category_id']})" for i in body["items"])
        return (command + f"      source {body['source']}, model version {body['model_version']}, features as of "
                f"{body['features_as_of']}: {items}")

    def stop(self) -> None:
        """Stop the server."""
        self.proc.terminate()
        self.proc.wait(30)


def _drain(cfg: RecsysConfig, sent: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(b["rows_in"] for b in last_batches(cfg, 100_000)) >= sent:
            return
        time.sleep(1)


def _top(spark: SparkSession, lake: Lake, cfg: RecsysConfig, user: str) -> str:
    recs = run_recommend(spark, lake, cfg, user, 5)
    return "      top 5: " + ", ".join(f"{r.item_id} ({r.category_id})" for r in recs.itertuples())
