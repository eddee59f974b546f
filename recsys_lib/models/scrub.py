"""Forgetting people in trained models (``recsys forget``).

A bundle lists every user id it learned in ``spec.json`` and keeps a learned embedding row for
each (``weights.npz`` and the exported query tower). Forgetting a user:

* replaces their id in the vocabulary with ``<forgotten-N>`` (N: the position, so the other
  users keep their rows, and a warm start from this bundle keeps working);
* zeroes their embedding row;
* exports the query tower again from the scrubbed spec and weights, so the SavedModel's
  vocabulary and variables no longer hold them either.

The person is then served as any unknown user (the OOV buckets). The other weights (dense
layers, item embeddings) were trained on their events too; removing that influence needs a
retrain, which the next scheduled training does without them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # (two_tower loads TensorFlow: only the functions that need it import it)
    from recsys_lib.models.two_tower import ModelSpec

FORGOTTEN = "<forgotten-{}>"


def forget_users(spec: ModelSpec, weights: Mapping[str, np.ndarray],
                 users: Iterable[str]) -> tuple[ModelSpec, dict[str, np.ndarray], int]:
    """Return ``spec`` and ``weights`` without ``users`` (stored ids), and how many were in the vocabulary."""
    from recsys_lib.models.two_tower import USER_EMBEDDING

    wanted = set(users)
    positions = [i for i, u in enumerate(spec.users) if u in wanted]
    if not positions:
        return spec, dict(weights), 0
    vocabulary = list(spec.users)
    arrays = dict(weights)
    rows = [spec.oov_buckets + i for i in positions]  # StringLookup puts its OOV indices first
    for name in (n for n in arrays if n.split("/")[0] == USER_EMBEDDING):
        table = np.array(arrays[name], copy=True)
        table[rows] = 0.0
        arrays[name] = table
    for i in positions:
        vocabulary[i] = FORGOTTEN.format(i)
    return replace(spec, users=vocabulary), arrays, len(positions)


def scrub_bundle(folder: Path, users: Iterable[str]) -> int:
    """Forget ``users`` in the bundle at ``folder`` in place (see the module docstring); returns how many it held.

    Each file is written beside the old one and renamed over it, ``spec.json`` last: a run
    killed halfway leaves a bundle that loads, and a re-run (which still finds the users in the
    spec) finishes it.
    """
    from recsys_lib.models.two_tower import ModelSpec, build, export_query_tower, load_weights

    spec = ModelSpec.load(folder / "spec.json")
    with np.load(folder / "weights.npz") as saved:
        weights = {k: saved[k] for k in saved.files}
    spec, weights, found = forget_users(spec, weights, users)
    if not found:
        return 0
    model = build(spec)
    load_weights(model, weights)
    fresh = folder / "query_tower.scrubbed"
    shutil.rmtree(fresh, ignore_errors=True)
    export_query_tower(model, fresh)
    _swap(fresh, folder / "query_tower")
    _replace(folder / "weights.npz", lambda tmp: np.savez(str(tmp), **weights))  # type: ignore[arg-type]
    meta_path = folder / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        meta["scrubbed_at"] = datetime.now(UTC).isoformat()
        _replace(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=2, default=str)))
    _replace(folder / "spec.json", spec.save)  # last: until it lands, a re-run finds the users and redoes it all
    return found


def bundle_folders(root: Path) -> list[Path]:
    """Every bundle below ``root`` (a folder with ``spec.json`` and ``weights.npz``), sorted."""
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.rglob("spec.json") if (p.parent / "weights.npz").is_file())


def _swap(fresh: Path, target: Path) -> None:
    """Put the folder ``fresh`` in ``target``'s place (a missing ``target``, after a kill, is fine)."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    fresh.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _replace(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through ``write`` into a sibling file, then rename it over ``path``."""
    tmp = path.with_name("tmp." + path.name)  # (keeps the suffix: np.savez appends .npz to a name without it)
    write(tmp)
    os.replace(tmp, path)
