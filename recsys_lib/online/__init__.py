"""The online feature store: a projection of the feature tables for serving.

``open_store(cfg)`` returns the backend ``online.backend`` names: SQLite (the
embedded default, one file under ``<home>/online``) or Redis (one server or a cluster). Both implement
:class:`~recsys_lib.online.base.OnlineStore` and pass the same conformance tests.
"""

from __future__ import annotations

from recsys_lib.core.config import RecsysConfig
from recsys_lib.online.base import Layer, OnlineStore, OnlineStoreError, StoredRow, StoreUnavailable, key_of

__all__ = ["Layer", "OnlineStore", "OnlineStoreError", "StoreUnavailable", "StoredRow", "key_of", "open_store"]


def open_store(cfg: RecsysConfig) -> OnlineStore:
    """The online store ``cfg`` configures."""
    if cfg.online.backend == "redis":
        from recsys_lib.online.redis import RedisStore

        return RedisStore(cfg.online_redis_url, namespace=cfg.online.namespace, grace=cfg.online.generation_grace,
                          timeout=cfg.online.timeout, cluster=cfg.online.redis_cluster)
    from recsys_lib.online.sqlite import SqliteStore

    return SqliteStore(cfg.online_sqlite_path, grace=cfg.online.generation_grace)
