"""The recommendation HTTP API (``recsys serve``): a thin FastAPI face over :mod:`recsys_lib.serving`.

Endpoints (the OpenAPI page at ``/docs`` is the reference):

* ``GET /recommendations/{user_id}?k=10&category=C`` and ``POST /recommendations`` (up to
  ``serve.max_batch_users`` users);
* ``GET /features/{entity}/{id}`` (entity ``user``, ``item`` or ``user_category`` with id ``user:category``);
* ``GET /healthz`` (the process is up), ``GET /readyz`` (model loaded and store reachable),
  ``GET /metrics`` (Prometheus);
* ``POST /admin/reload`` (``Authorization: Bearer $RECSYS_ADMIN_TOKEN``): load the champion and swap it in.

Bad input is answered with a 4xx whose ``detail`` names the problem; an unexpected
error with a 500 that carries no traceback (it is logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field

from recsys_lib.core.config import RecsysConfig, load_config
from recsys_lib.online import OnlineStoreError, open_store
from recsys_lib.serving.batcher import Batcher
from recsys_lib.serving.model import ModelLoadError
from recsys_lib.serving.recommender import BadRequest, Recommender

log = logging.getLogger(__name__)
#: Environment variable carrying ``recsys serve``'s config arguments to uvicorn's worker processes.
ARGS_ENV = "RECSYS_SERVE_ARGS"


class FastJSON(JSONResponse):
    """JSON through orjson (NaN and infinities become null)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class BatchRequest(BaseModel):
    """``POST /recommendations``."""

    users: list[str] = Field(..., description="user ids")
    k: int = Field(10, description="items per user")
    category: str | None = Field(None, description="only items of this category")


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self, rec: Recommender) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("recsys_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("recsys_request_seconds", "Request latency", ["endpoint"], registry=self.registry,
                                 buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 2.5))
        self.sources = Gauge("recsys_recommendations", "Users answered, by source", ["source"],
                             registry=self.registry)
        self.store_errors = Gauge("recsys_store_errors", "Online store calls that failed", registry=self.registry)
        self.reloads = Gauge("recsys_model_reloads", "Models swapped in", registry=self.registry)
        self.reload_failures = Gauge("recsys_model_reload_failures", "Model loads that failed",
                                     registry=self.registry)
        self.model_version = Gauge("recsys_model_version", "The served model version", registry=self.registry)
        self.ready = Gauge("recsys_ready", "1 when the model is loaded and the store reachable",
                           registry=self.registry)
        self.rec = rec

    def render(self) -> bytes:
        c = self.rec.counters
        for source, n in c.sources.items():
            self.sources.labels(source).set(n)
        self.store_errors.set(c.store_errors)
        self.reloads.set(c.reloads)
        self.reload_failures.set(c.reload_failures)
        model = self.rec.model
        if model is not None and model.version.isdigit():
            self.model_version.set(int(model.version))
        self.ready.set(1 if self.rec.ready() else 0)
        return generate_latest(self.registry)


class Measure:
    """Pure ASGI middleware counting requests and timing them by route (cheaper than ``BaseHTTPMiddleware``)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)


def create_app(cfg: RecsysConfig, *, recommender: Recommender | None = None) -> FastAPI:
    """The API over ``cfg``'s online store and served model."""
    rec = recommender or Recommender(cfg, open_store(cfg))
    metrics = Metrics(rec)
    batcher = Batcher(rec.recommend, max_size=cfg.serve.batch_max, wait=cfg.serve.batch_wait)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if rec.model is None:
            await asyncio.to_thread(rec.reload)
        await asyncio.to_thread(rec.check_store)
        _freeze_heap()
        # the event loop and the batch's worker thread share the GIL: a shorter switch interval lets the
        # loop answer between the worker's steps (p99 13-15 ms against 14-19 ms at Python's 5 ms, 500 req/s)
        sys.setswitchinterval(cfg.serve.switch_interval)
        batcher.start()
        tasks = [asyncio.create_task(_every(1.0, rec.check_store))]
        if cfg.serve.reload_poll:
            tasks.append(asyncio.create_task(_every(cfg.serve.reload_poll, rec.reload)))
        yield
        for task in tasks:
            task.cancel()
        await batcher.stop()

    app = FastAPI(title="recsys", summary="Fresh recommendations from the online feature store",
                  default_response_class=FastJSON, lifespan=lifespan)
    app.state.recommender, app.state.batcher = rec, batcher
    app.add_middleware(Measure, metrics=metrics)

    @app.exception_handler(BadRequest)
    async def bad_request(_r: Request, exc: BadRequest) -> Response:
        return FastJSON({"detail": str(exc)}, status_code=400)

    @app.exception_handler(ModelLoadError)
    async def no_model(_r: Request, exc: ModelLoadError) -> Response:
        return FastJSON({"detail": f"no model is being served: {exc}"}, status_code=503)

    @app.exception_handler(OnlineStoreError)
    async def store_down(_r: Request, exc: OnlineStoreError) -> Response:
        return FastJSON({"detail": f"online store unavailable: {exc}"}, status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return FastJSON({"detail": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)

    @app.get("/recommendations/{user_id}", summary="Top-k items for one user")
    async def recommend_one(user_id: str, k: int = Query(cfg.serve.k, description="items to return"),
                            category: str | None = Query(None, description="only items of this category")) -> Any:
        rec.validate([user_id], k, category)  # here, so that a bad request cannot fail a whole batch
        return await batcher.submit(user_id, k, category)

    @app.post("/recommendations", summary="Top-k items for a batch of users")
    async def recommend_many(body: BatchRequest) -> Any:
        rec.validate(body.users, body.k, body.category)
        answers = await asyncio.to_thread(rec.recommend, body.users, body.k, body.category)
        return {"results": answers}

    @app.get("/features/{entity}/{entity_id}", summary="One row of online features")
    async def features(entity: str, entity_id: str) -> Any:
        if rec.store_ok:  # one read of well under a millisecond: a thread hop would cost more
            row = rec.features(entity, entity_id)
        else:  # the store failed last time: a call that may hang must not block the event loop
            row = await asyncio.to_thread(rec.features, entity, entity_id)
        if row is None:
            raise HTTPException(404, f"no online features for {entity} {entity_id!r}")
        return _jsonable(row)

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> Any:
        return {"status": "ok"}

    @app.get("/readyz", summary="Model loaded and store reachable")
    async def readyz() -> Any:
        body = {"ready": rec.ready(), "model_version": rec.model.version if rec.model else None,
                "store": rec.store.backend, "store_reachable": rec.store_ok}
        return FastJSON(body, status_code=200 if body["ready"] else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload", summary="Load the champion and swap it in (needs the admin token)")
    async def reload(authorization: str | None = Header(None)) -> Any:
        _authorise(authorization)
        return await asyncio.to_thread(rec.reload)

    return app


def _authorise(header: str | None) -> None:
    """401 unless ``header`` is ``Bearer <RECSYS_ADMIN_TOKEN>`` (compared in constant time)."""
    token = os.environ.get("RECSYS_ADMIN_TOKEN")
    if not token:
        raise HTTPException(401, "admin endpoints are disabled: start the server with RECSYS_ADMIN_TOKEN set")
    given = (header or "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "missing or wrong admin token (Authorization: Bearer <token>)")


def _freeze_heap() -> None:
    """Move the objects loaded at start (TensorFlow, the model) out of the garbage collector's reach.

    A full collection walks every tracked object: with TensorFlow loaded that pause
    landed in the latency tail. Frozen objects are never scanned (``gc.freeze``).
    """
    gc.collect()
    gc.freeze()


async def _every(seconds: float, fn: Any) -> None:
    while True:
        await asyncio.sleep(seconds)
        await asyncio.to_thread(fn)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, bytes):
            continue  # sketches: their estimate is served instead
        out[key] = value.isoformat() if hasattr(value, "isoformat") else value
        if key == "recent_items" and value:
            out[key] = [{**e, "ts": e["ts"].isoformat()} for e in value]
        if key in ("latest_category", "latest_price") and value:
            out[key] = {**value, "ts": value["ts"].isoformat()}
    return out


def app_from_env() -> FastAPI:
    """Uvicorn's factory in each worker: the config ``recsys serve`` was given (through ``$RECSYS_SERVE_ARGS``)."""
    args = json.loads(os.environ.get(ARGS_ENV, "{}"))
    return create_app(load_config(args.get("conf") or [], overrides=args.get("overrides") or []))
