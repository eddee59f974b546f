"""Requests to answers: online features -> query tower -> ANN search -> filters, with fallbacks and hot swap.

* A known user: their online state (base and pending layers merged) is finalised
  at the serving time, encoded by the champion's query tower and searched in the
  index; purchased items are dropped, and ``category`` restricts the candidates
  (exact scores over that category's items). ``source`` is ``model``.
* An unknown user (no online row): the model's popular list, ``source: popular``.
* The store unreachable: the popular list, ``source: fallback``; counted, logged at
  WARNING, and ``ready()`` is false until the store answers again.

Requests name users by the shop's raw ids; with ``privacy.pseudonymize`` on they are
hashed on the way in (the store and the model know only pseudonyms) and answered under
the id the caller gave.

The serving time is ``min(now, the store's watermark)``: the newest event written
to the store. With a live stream that is now; for historical data it keeps
decayed features meaningful, as ``recsys recommend`` does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from recsys_lib.core.config import RecsysConfig
from recsys_lib.core.privacy import pseudonyms_for
from recsys_lib.features.definitions import USER, Entity, entities
from recsys_lib.features.online import merged_state, value_schema
from recsys_lib.features.read_local import finalise_state
from recsys_lib.online import OnlineStore, OnlineStoreError, key_of
from recsys_lib.online.codec import decoder
from recsys_lib.serving.model import ModelLoadError, ServedModel, Source, resolve

log = logging.getLogger(__name__)


class BadRequest(ValueError):
    """A request the server refuses; the message says why (answered with a 4xx)."""


@dataclass
class Counters:
    """What the server has done, for ``/metrics``."""

    sources: Counter[str] = field(default_factory=Counter)
    store_errors: int = 0
    reloads: int = 0
    reload_failures: int = 0
    last_reload_error: str | None = None


class Recommender:
    """Answers recommendation and feature requests; thread-safe."""

    def __init__(self, cfg: RecsysConfig, store: OnlineStore, *, use_registry: bool = True) -> None:
        self.cfg, self.store, self.use_registry = cfg, store, use_registry
        self.entities: dict[str, Entity] = {e.name: e for e in entities(cfg.features).values()}
        self._decoders = {name: decoder(value_schema(e)) for name, e in self.entities.items()}
        self.pseudonyms = pseudonyms_for(cfg)
        self.model: ServedModel | None = None
        self.counters = Counters()
        self.store_ok = False
        self._reload_lock = threading.Lock()
        self._watermark: tuple[float, datetime | None] = (0.0, None)

    # -- model lifecycle ---------------------------------------------------------------------------------
    def reload(self, source: Source | None = None) -> dict[str, Any]:
        """Load the model to serve beside the current one and swap it in; a failure keeps the old one serving.

        Returns:
            ``{"swapped": bool, "version": ..., "error": ...}``.

        """
        with self._reload_lock:
            current = self.model
            try:
                wanted = source or resolve(self.cfg, use_registry=self.use_registry)
                if current is not None and wanted == current.source:
                    return {"swapped": False, "version": current.version}
                loaded = ServedModel.load(wanted)
            except (ModelLoadError, OSError, ValueError) as exc:
                self.counters.reload_failures += 1
                self.counters.last_reload_error = f"{type(exc).__name__}: {exc}"
                log.warning("model reload failed; still serving version %s: %s",
                            current.version if current else None, self.counters.last_reload_error)
                return {"swapped": False, "version": current.version if current else None,
                        "error": self.counters.last_reload_error}
            self.model = loaded  # one reference assignment: requests that hold the old model finish on it
            self.counters.reloads += 1
            log.info("serving model version %s from %s (loaded in %.2fs)", loaded.version, loaded.source.path,
                     loaded.load_seconds)
            return {"swapped": True, "version": loaded.version, "previous": current.version if current else None}

    def check_store(self) -> bool:
        """Ping the store; remembers the answer for ``ready()``."""
        try:
            self.store.ping()
            self.store_ok = True
        except OnlineStoreError as exc:
            self._store_failed("ping", exc)
        return self.store_ok

    def ready(self) -> bool:
        """True once a model is loaded and the store answered its last call."""
        return self.model is not None and self.store_ok

    def _store_failed(self, what: str, exc: OnlineStoreError) -> None:
        self.store_ok = False
        self.counters.store_errors += 1
        log.warning("online store %s failed, answering from the popular list: %s", what, exc)

    # -- requests ------------------------------------------------------------------------------------------
    def features(self, entity: str, entity_id: str) -> dict[str, Any] | None:
        """One key's online state with its read-time features (None: absent).

        Raises:
            BadRequest: For an unknown entity or a malformed id.
            OnlineStoreError: If the store cannot be read.

        """
        if entity not in self.entities:
            raise BadRequest(f"unknown entity {entity!r}; expected one of {sorted(self.entities)}")
        ent = self.entities[entity]
        parts = entity_id.split(":", len(ent.keys) - 1) if len(ent.keys) > 1 else [entity_id]
        if len(parts) != len(ent.keys):
            raise BadRequest(f"{entity} ids are {':'.join(ent.keys)}")
        for part in parts:
            check_id(part)
        stored = [self._stored(p) if key == "user_id" else p for key, p in zip(ent.keys, parts, strict=True)]
        try:
            row = self.store.read(ent.table, [key_of(stored)])[0]
        except OnlineStoreError as exc:
            self._store_failed("read", exc)
            raise
        self.store_ok = True
        if row is None:
            return None
        state = merged_state(ent, row, self._decoders[entity])
        if state is None:
            return None
        out = finalise_state(state, ent, self.cfg.features, self.serving_time())
        out.update({k: v for k, v in zip(ent.keys, parts, strict=True)})
        out["versions"] = {"base": row.base_version, "pending": row.pending_version}
        return out

    def validate(self, users: Sequence[str], k: int, category: str | None) -> ServedModel:
        """The model that will answer, once the request is known to be well formed.

        Raises:
            BadRequest: For a bad ``k``, id or category, or too many users.
            ModelLoadError: If no model is loaded yet.

        """
        if not 1 <= k <= self.cfg.serve.max_k:
            raise BadRequest(f"k must be between 1 and {self.cfg.serve.max_k}, got {k}")
        if not 1 <= len(users) <= self.cfg.serve.max_batch_users:
            raise BadRequest(f"a request takes 1 to {self.cfg.serve.max_batch_users} users, got {len(users)}")
        for user in users:
            check_id(user)
        model = self.model
        if model is None:
            raise ModelLoadError("no model is loaded yet")
        if category is not None and category not in model.by_category:
            raise BadRequest(f"unknown category {category!r}")
        return model

    def recommend(self, users: Sequence[str], k: int, category: str | None = None) -> list[dict[str, Any]]:
        """Top-``k`` for each user (see the module docstring); one answer per user, in order.

        Raises:
            BadRequest: For a bad ``k``, id or category, or too many users.

        """
        model = self.validate(users, k, category)
        stored = [self._stored(u) for u in users]
        try:
            rows = self.store.read(self.entities[USER].table, stored)
            bought = self.store.purchases(stored) if self.cfg.evaluate.filter_purchased else {}
            at = self.serving_time()
            self.store_ok = True
        except OnlineStoreError as exc:
            self._store_failed("read", exc)
            return [self._popular(model, u, k, category, set(), "fallback", None) for u in users]
        states: list[dict[str, Any] | None] = []
        for user, row in zip(stored, rows, strict=True):
            state = None if row is None else merged_state(self.entities[USER], row, self._decoders[USER])
            states.append(None if state is None else
                          finalise_state(state, self.entities[USER], self.cfg.features, at) | {"user_id": user})
        known = [s for s in states if s is not None]
        picks = iter(model.recommend(known, k, [bought.get(s["user_id"], set()) for s in known], category)
                     if known else [])
        out = []
        for user, key, state in zip(users, stored, states, strict=True):
            if state is None:
                out.append(self._popular(model, user, k, category, bought.get(key, set()), "popular", None))
                continue
            items = [self._item(model, i, s) for i, s in next(picks)]
            self.counters.sources["model"] += 1
            out.append({"user_id": user, "items": items, "source": "model", "model_version": model.version,
                        "ranked": model.ranker is not None, "features_as_of": _iso(state["as_of"])})
        return out

    def _stored(self, user: str) -> str:
        """The id the store and the model know ``user`` by: its pseudonym, or itself with pseudonyms off."""
        return user if self.pseudonyms is None else self.pseudonyms.of(user)

    def _popular(self, model: ServedModel, user: str, k: int, category: str | None, bought: set[str],
                 source: str, as_of: datetime | None) -> dict[str, Any]:
        chosen = [i for i in model.popular if i not in bought and i in model.position
                  and (category is None or model.item_category[model.position[i]] == category)][:k]
        self.counters.sources[source] += 1
        return {"user_id": user, "items": [self._item(model, model.position[i], None) for i in chosen],
                "source": source, "model_version": model.version, "ranked": False, "features_as_of": _iso(as_of)}

    @staticmethod
    def _item(model: ServedModel, i: int, score: float | None) -> dict[str, Any]:
        price = float(model.item_price[i])
        category = model.item_category[i]
        return {"item_id": str(model.item_ids[i]), "score": score,
                "category_id": category if isinstance(category, str) else None,
                "price": None if price != price else price}

    def serving_time(self) -> datetime:
        """``min(now, the store's watermark)``, the watermark cached for 0.25 s."""
        now = datetime.now(UTC)
        read_at, mark = self._watermark
        if time.monotonic() - read_at > 0.25:
            micros = self.store.watermark()
            mark = None if micros is None else datetime.fromtimestamp(micros / 1e6, UTC)
            self._watermark = (time.monotonic(), mark)
        return now if mark is None or mark > now else mark


#: Ids the API accepts: printable, no control characters, at most this long.
MAX_ID_LENGTH = 128


def check_id(value: str) -> None:
    """Raise :class:`BadRequest` for an empty, over-long or non-printable id."""
    if not value:
        raise BadRequest("empty id")
    if len(value) > MAX_ID_LENGTH:
        raise BadRequest(f"id longer than {MAX_ID_LENGTH} characters ({len(value)})")
    if not value.isprintable():
        raise BadRequest(f"id {value!r} has non-printable characters")


def _iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).isoformat()
