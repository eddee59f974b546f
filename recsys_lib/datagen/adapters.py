"""Real data sets converted into the raw log format (JSON lines by event date).

MovieLens (``ratings.csv`` + ``movies.csv``): each rating becomes one event at its
timestamp. A rating is an explicit, graded interaction, so its strength is kept
as the funnel stage it most resembles:

==============  ============
rating          event_type
==============  ============
4.5 - 5.0       purchase
4.0             add_to_cart
3.0 - 3.5       click
0.5 - 2.5       view
==============  ============

``event_id`` is ``ml-<userId>-<movieId>``, ``category_id`` the movie's first genre
(none for "(no genres listed)"), ``quantity`` 1 for add_to_cart and purchase;
there is no price. Users and items keep their MovieLens ids as text.

Taobao UserBehavior (no header: user, item, category, behavior, unix seconds):
``pv`` -> view, ``fav`` -> click (interest short of the cart), ``cart`` ->
add_to_cart, ``buy`` -> purchase. ``event_id`` is ``tb-<line number>``, so rows
repeated in the source stay separate events. There is no price.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_lib.datagen.writer import day_folder, masked, records_to_lines, write_lines

TAOBAO_BEHAVIOR = {"pv": "view", "fav": "click", "cart": "add_to_cart", "buy": "purchase"}


@dataclass(frozen=True)
class AdaptResult:
    """What an adapter wrote."""

    source_rows: int
    events: int
    skipped: int
    files: int


def movielens_event_type(rating: np.ndarray) -> np.ndarray:
    """Funnel stage for MovieLens ratings (see the module docstring)."""
    return np.select([rating >= 4.5, rating >= 4.0, rating >= 3.0], ["purchase", "add_to_cart", "click"],
                     default="view")


def adapt_movielens(ratings_csv: str | Path, movies_csv: str | Path, out: str | Path) -> AdaptResult:
    """Convert MovieLens ratings into raw logs below ``out``."""
    ratings = pd.read_csv(ratings_csv, dtype={"userId": "int64", "movieId": "int64", "rating": "float64",
                                              "timestamp": "int64"})
    movies = pd.read_csv(movies_csv, usecols=["movieId", "genres"])
    genre = movies["genres"].str.split("|").str[0].replace("(no genres listed)", None)
    category = ratings["movieId"].map(dict(zip(movies["movieId"], genre)))
    etype = movielens_event_type(ratings["rating"].to_numpy())
    raw = pd.DataFrame({
        "event_id": "ml-" + ratings["userId"].astype(str) + "-" + ratings["movieId"].astype(str),
        "event_ts": ratings["timestamp"] * 1000,
        "user_id": ratings["userId"].astype(str),
        "event_type": etype,
        "item_id": ratings["movieId"].astype(str),
        "category_id": category,
        "quantity": masked(np.isin(etype, ("add_to_cart", "purchase")), 1),
    })
    files = _write_by_day(raw, out, ratings["timestamp"])
    return AdaptResult(source_rows=len(ratings), events=len(raw), skipped=0, files=files)


def adapt_taobao(input_csv: str | Path, out: str | Path) -> AdaptResult:
    """Convert Taobao UserBehavior rows into raw logs below ``out``.

    Rows with an unknown behaviour code are skipped and counted.
    """
    rows = pd.read_csv(input_csv, header=None, names=["user", "item", "category", "behavior", "ts"],
                       dtype={"user": str, "item": str, "category": str, "behavior": str, "ts": "int64"})
    etype = rows["behavior"].map(TAOBAO_BEHAVIOR)
    known = etype.notna()
    raw = pd.DataFrame({
        "event_id": "tb-" + pd.Series(np.arange(1, len(rows) + 1), index=rows.index).astype(str),
        "event_ts": rows["ts"] * 1000,
        "user_id": rows["user"],
        "event_type": etype,
        "item_id": rows["item"],
        "category_id": rows["category"],
        "quantity": masked(etype.isin(["add_to_cart", "purchase"]).to_numpy(), 1),
    })[known]
    files = _write_by_day(raw, out, rows["ts"][known])
    return AdaptResult(source_rows=len(rows), events=int(known.sum()), skipped=int((~known).sum()), files=files)


def _write_by_day(raw: pd.DataFrame, out: str | Path, unix_seconds: pd.Series) -> int:
    days = pd.to_datetime(unix_seconds, unit="s", utc=True).dt.strftime("%Y-%m-%d")
    files = 0
    for day, part in raw.groupby(days.to_numpy(), sort=True):
        write_lines(day_folder(out, str(day)) / "part-00000.jsonl", records_to_lines(part), compress=False)
        files += 1
    return files
