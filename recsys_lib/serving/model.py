"""A served model: the query tower, the ANN index and the catalogue, loaded once and searched per request.

:func:`resolve` decides what to serve: the exported bundle (``<home>/serving/current``,
written by ``recsys export``) when it holds the registry's champion, else the
champion's own bundle. :class:`ServedModel` is immutable once loaded, so a hot
swap replaces the whole object and in-flight requests finish on the old one.

A bundle whose ranking stage beat retrieval alone (``meta.ranking.used``, see
:mod:`recsys_lib.pipelines.ranking`) is served with its ranker: the index's top
``ranking.candidates`` are re-scored by it, and the answer's scores are the ranker's logits.
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from recsys_lib.core.config import RecsysConfig
from recsys_lib.models.bundle import Bundle
from recsys_lib.models.index import Index

log = logging.getLogger(__name__)
_TOP = pa.list_(pa.struct([pa.field("category_id", pa.string()), pa.field("weight", pa.float64())]))


class ModelLoadError(RuntimeError):
    """A bundle could not be loaded; the message names the folder and the cause."""


@dataclass(frozen=True)
class Source:
    """What to serve: a bundle folder, its model version and a stamp that changes with every export."""

    path: Path
    version: str
    stamp: str


def serving_dir(cfg: RecsysConfig) -> Path:
    """Folder of the exported serving bundle (``recsys export``)."""
    return Path(cfg.home_dir) / "serving" / "current"


def resolve(cfg: RecsysConfig, *, use_registry: bool = True) -> Source:
    """The bundle to serve: the export if it holds the champion (or the registry is not asked), else the champion's.

    Raises:
        ModelLoadError: If there is neither an export nor a champion.

    """
    exported = serving_dir(cfg)
    meta_path = exported / "meta.json"
    export = None
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        # (a forget that scrubbed the export changes the stamp: the hot swap reloads it)
        export = Source(exported, str(meta.get("model_version")),
                        f"{meta.get('exported_at')}|{meta.get('scrubbed_at', '')}")
    if not use_registry:
        if export is None:
            raise ModelLoadError(f"no exported model at {exported}: run `recsys export` first")
        return export
    from mlflow.exceptions import MlflowException

    from recsys_lib.models import tracking

    try:
        client = tracking.configure(cfg)
        champion = tracking.model_version(client, cfg.mlflow.registered_model, alias=tracking.CHAMPION)
    except MlflowException as exc:
        raise ModelLoadError(f"the model registry at {cfg.mlflow_tracking_uri} could not be read: {exc}") from exc
    if champion is None:
        if export is None:
            raise ModelLoadError(f"'{cfg.mlflow.registered_model}' has no champion and {exported} holds no export: "
                                 "run `recsys train`, `recsys promote` and `recsys export` first")
        return export
    if export is not None and export.version == str(champion.version):
        return export
    return Source(Path(champion.bundle), str(champion.version), f"registry:{champion.version}")


@dataclass
class ServedModel:
    """A loaded bundle ready to answer queries."""

    source: Source
    bundle: Bundle
    item_ids: np.ndarray
    item_category: np.ndarray
    item_price: np.ndarray
    embeddings: np.ndarray
    index: Index
    popular: list[str]
    by_category: dict[str, np.ndarray] = field(default_factory=dict)
    position: dict[str, int] = field(default_factory=dict)
    #: The ranking stage, when the bundle's ranker beat retrieval alone; else None.
    ranker: Any = None
    item_numeric: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    rank_candidates: int = 0
    loaded_at: float = 0.0
    load_seconds: float = 0.0

    @property
    def version(self) -> str:
        """The registered model version."""
        return self.source.version

    @classmethod
    def load(cls, source: Source) -> ServedModel:
        """Load every part of ``source`` and run one query through the tower, so the first request is fast.

        Raises:
            ModelLoadError: If any part is missing or unreadable.

        """
        started = time.monotonic()
        try:
            bundle = Bundle(source.path)
            items = bundle.items
            index = bundle.index
            embeddings = np.stack(items["embedding"].to_numpy()).astype(np.float32) if len(items) else \
                np.zeros((0, 1), np.float32)
            ids = items["item_id"].astype(str).to_numpy()
            cats = items["category_id"].to_numpy()
            by_category: dict[str, list[int]] = {}
            for i, c in enumerate(cats):
                if isinstance(c, str):
                    by_category.setdefault(c, []).append(i)
            model = cls(source=source, bundle=bundle, item_ids=ids, item_category=cats,
                        item_price=items["price"].to_numpy(dtype=float, na_value=np.nan), embeddings=embeddings,
                        index=index, popular=[str(i) for i in bundle.meta.get("popular", [])],
                        by_category={c: np.asarray(v) for c, v in by_category.items()},
                        position={str(i): n for n, i in enumerate(ids)})
            model._load_ranker(items)
            model.encode([{"user_id": "", "recent_item_ids": [], "top_categories": []}])  # warm the tower
        except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile, _tf_error()) as exc:
            raise ModelLoadError(f"cannot load the model bundle at {source.path}: {type(exc).__name__}: {exc}") \
                from exc
        model.loaded_at = time.time()
        model.load_seconds = round(time.monotonic() - started, 3)
        return model

    def _load_ranker(self, items: Any) -> None:
        """The bundle's ranker and the items' normalised numerics, if its ranking stage was used."""
        ranking = self.bundle.meta.get("ranking") or {}
        if not ranking.get("used"):
            return
        from recsys_lib.models.data import normalised_numeric
        from recsys_lib.models.ranking import load_ranker

        spec = self.bundle.spec
        missing = [c for c in spec.item_numeric if c not in items.columns]
        if missing:  # a bundle saved before items kept their numerics: retrieval alone, and say why
            log.warning("bundle %s: its ranker is not served, as items.parquet lacks the numeric inputs %s "
                        "(export it again with this version)", self.source.path, missing)
            return
        self.ranker = load_ranker(self.source.path / "ranker")
        self.item_numeric = normalised_numeric(pa.Table.from_pandas(items, preserve_index=False), spec, "item")
        self.rank_candidates = int(ranking.get("candidates", 200))

    def _query_table(self, users: list[dict[str, Any]]) -> pa.Table:
        spec = self.bundle.spec
        columns: dict[str, Any] = {"user_id": pa.array([u["user_id"] for u in users], pa.string())}
        for name in spec.query_numeric:
            columns[name] = pa.array([_number(u.get(name[2:])) for u in users], pa.float64())
        columns["u_recent_items"] = pa.array([u.get("recent_item_ids") or [] for u in users], pa.list_(pa.string()))
        columns["u_top_categories"] = pa.array([u.get("top_categories") or [] for u in users], _TOP)
        return pa.table(columns)

    def encode(self, users: list[dict[str, Any]]) -> np.ndarray:
        """Query embeddings for finalised user states (``user_id``, numeric features, recent items, top categories)."""
        return self.bundle.encode_queries(self._query_table(users))

    def recommend(self, users: list[dict[str, Any]], k: int, exclude: list[set[str]],
                  category: str | None = None) -> list[list[tuple[int, float]]]:
        """:meth:`search` for finalised user states, re-ranked when the bundle serves a ranker."""
        table = self._query_table(users)
        queries = self.bundle.encode_queries(table)
        if self.ranker is None:
            return self.search(queries, k, exclude, category)
        from recsys_lib.models.data import normalised_numeric

        q_numeric = normalised_numeric(table, self.bundle.spec, "query")
        return self.search(queries, k, exclude, category, q_numeric=q_numeric)

    def search(self, queries: np.ndarray, k: int, exclude: list[set[str]], category: str | None = None,
               q_numeric: np.ndarray | None = None) -> list[list[tuple[int, float]]]:
        """Top-``k`` (item position, score) per query, best first, without each query's ``exclude`` items.

        With ``q_numeric`` (the queries' normalised numerics) and a ranker, the top
        ``rank_candidates`` of retrieval are re-scored by the ranker first.
        """
        ranked = self.ranker is not None and q_numeric is not None
        if category is not None:
            subset = self.by_category.get(category, np.zeros(0, np.int64))
            scores = queries @ self.embeddings[subset].T
            order = np.argsort(-scores, axis=1, kind="stable")
            idx, top = subset[order], np.take_along_axis(scores, order, axis=1)
            if ranked:
                idx, top = idx[:, :max(self.rank_candidates, k)], top[:, :max(self.rank_candidates, k)]
        else:
            extra = max((len(e) for e in exclude), default=0)
            want = max(self.rank_candidates, k + extra) if ranked else k + extra
            idx, top = self.index.search(queries, min(want, len(self.item_ids)))
        if ranked and idx.size:
            idx, top = self._rerank(idx, queries, q_numeric)
        out = []
        for row, banned in enumerate(exclude):
            picks = [(int(i), float(s)) for i, s in zip(idx[row], top[row], strict=True)
                     if i >= 0 and self.item_ids[i] not in banned]
            out.append(picks[:k])
        return out

    def _rerank(self, idx: np.ndarray, queries: np.ndarray, q_numeric: Any) -> tuple[np.ndarray, np.ndarray]:
        """Candidates reordered by the ranker's logits (an index's -1 padding stays last)."""
        from recsys_lib.models.ranking import rank_logits

        valid = idx >= 0
        logits = rank_logits(self.ranker, np.where(valid, idx, 0), queries, q_numeric, self.embeddings,
                             self.item_numeric)
        logits[~valid] = -np.inf
        order = np.argsort(-logits, axis=1, kind="stable")
        return np.take_along_axis(idx, order, axis=1), np.take_along_axis(logits, order, axis=1)


def _tf_error() -> type[Exception]:
    """TensorFlow's own error base (a missing or corrupt SavedModel raises one of its subclasses)."""
    import tensorflow as tf

    return tf.errors.OpError


def _number(value: Any) -> float:
    return 0.0 if value is None else float(value)
