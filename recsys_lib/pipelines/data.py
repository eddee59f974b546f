"""Jobs that produce raw logs: the synthetic generator and the real-data adapters."""

from __future__ import annotations

from pathlib import Path

from recsys_lib.datagen.adapters import AdaptResult, adapt_movielens, adapt_taobao
from recsys_lib.datagen.synthetic import GeneratorSpec, Manifest, generate


def run_generate(spec: GeneratorSpec, out: str | Path) -> Manifest:
    """Generate a synthetic data set into ``out`` (see :mod:`recsys_lib.datagen.synthetic`)."""
    return generate(spec, out)


def run_adapt(source: str, out: str | Path, *, ratings: str | None = None, movies: str | None = None,
              taobao_csv: str | None = None) -> AdaptResult:
    """Convert a real data set (``movielens`` or ``taobao``) into raw logs.

    Raises:
        ValueError: On an unknown source or missing input file.

    """
    if source == "movielens":
        if not ratings or not movies:
            raise ValueError("adapt movielens needs --ratings and --movies")
        _require_file(ratings, "--ratings")
        _require_file(movies, "--movies")
        return adapt_movielens(ratings, movies, out)
    if source == "taobao":
        if not taobao_csv:
            raise ValueError("adapt taobao needs --input")
        _require_file(taobao_csv, "--input")
        return adapt_taobao(taobao_csv, out)
    raise ValueError(f"unknown data set {source!r}: expected 'movielens' or 'taobao'")


def _require_file(path: str, flag: str) -> None:
    if not Path(path).is_file():
        raise ValueError(f"{flag} {path} is not a file")
