"""Writing raw JSON-lines files into a date-partitioned landing folder, atomically."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def day_folder(out: str | Path, day: str) -> Path:
    """``<out>/date=<day>``, created if missing."""
    folder = Path(out) / f"date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_lines(path: Path, lines: list[str] | pd.Series, *, compress: bool) -> int:
    """Write lines to ``path`` via a hidden temp file and a rename; return bytes written.

    Readers (Spark skips names starting with ``.``) never see a half-written file.
    """
    payload = ("\n".join(lines) + "\n").encode("utf-8") if len(lines) else b""
    tmp = path.with_name(f".{path.name}.tmp")
    if compress:
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz:
            gz.write(payload)
    else:
        tmp.write_bytes(payload)
    os.replace(tmp, path)
    return len(payload)


def records_to_lines(frame: pd.DataFrame) -> list[str]:
    """One compact JSON object per row (missing values are written as ``null``)."""
    if frame.empty:
        return []
    text = frame.to_json(orient="records", lines=True, date_format="iso", force_ascii=False)
    return [line for line in text.splitlines() if line]


def masked(mask: np.ndarray, values: Any) -> np.ndarray:
    """An object array holding ``values`` where ``mask`` is true and None elsewhere."""
    out = np.full(len(mask), None, dtype=object)
    out[mask] = np.asarray(values, dtype=object)[mask] if np.ndim(values) else values
    return out
