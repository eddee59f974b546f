"""Synthetic e-commerce behaviour logs with planted, learnable signal.

The world:

* categories with Zipf-like sizes; items with power-law (Pareto) popularity and
  log-normal prices per category; some items appear only after day 0;
* users with sparse tastes over categories (Dirichlet), a second taste they drift
  towards over the days, log-normal activity; some users appear later;
* sessions starting on a daily rhythm (evening peak); each step is a search or a
  view of an item picked by taste then popularity; views lead on through a
  click -> add_to_cart -> purchase funnel whose rates rise with the user's
  affinity for the item's category.

Then the dirt: exact duplicate lines, late events written into a later day's
folder, and bad records of every quarantine kind. ``_manifest.json`` in the
output says how many of each were planted, so ingestion can be checked against
it. Output is deterministic for a seed and is written day by day in chunks, so
memory stays bounded whatever the event count.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from recsys_lib.datagen.writer import day_folder, masked, records_to_lines, write_lines

BAD_KINDS: tuple[str, ...] = (
    "unparseable", "not_an_object", "ill_typed", "missing_field", "unknown_event_type",
    "bad_timestamp", "future_timestamp", "negative_price", "bad_quantity", "missing_item_id",
    "oversized_line",
)
#: Oversized lines are large; plant few of them.
MAX_OVERSIZED = 20
SESSION_CHUNK = 100_000


@dataclass(frozen=True)
class GeneratorSpec:
    """Size and dirt of a synthetic data set."""

    users: int = 2_000
    items: int = 1_000
    days: int = 14
    events: int = 100_000
    bad_fraction: float = 0.01
    duplicate_fraction: float = 0.005
    late_fraction: float = 0.01
    seed: int = 42
    start: date = date(2024, 1, 1)
    categories: int = 0
    compress: bool = True
    oversized_bytes: int = 70_000

    def __post_init__(self) -> None:
        for name in ("users", "items", "days", "events"):
            if getattr(self, name) < 1:
                raise ValueError(f"generator: --{name} must be at least 1, got {getattr(self, name)}")
        for name in ("bad_fraction", "duplicate_fraction", "late_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"generator: {name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def n_categories(self) -> int:
        """Number of categories (derived from the item count unless given)."""
        return self.categories or int(np.clip(self.items // 50, 4, 40))


@dataclass
class Manifest:
    """What a generator run planted."""

    spec: dict[str, object]
    valid_events: int = 0
    duplicates: int = 0
    late_events: int = 0
    bad_by_kind: dict[str, int] = field(default_factory=dict)
    lines: int = 0
    files: int = 0
    bytes: int = 0
    events_by_type: dict[str, int] = field(default_factory=dict)

    @property
    def bad(self) -> int:
        """All planted bad records."""
        return sum(self.bad_by_kind.values())


class _World:
    """Users, items and tastes drawn once per seed."""

    def __init__(self, spec: GeneratorSpec, rng: np.random.Generator) -> None:
        c = spec.n_categories
        size_weights = 1.0 / np.arange(1, c + 1) ** 0.8
        self.item_category = rng.choice(c, size=spec.items, p=size_weights / size_weights.sum())
        self.item_category[:c] = np.arange(c) if spec.items >= c else self.item_category[:c]
        self.item_popularity = rng.pareto(1.2, size=spec.items) + 1.0
        category_price = rng.uniform(2.0, 5.0, size=c)
        self.item_price = np.round(np.exp(rng.normal(category_price[self.item_category], 0.5)), 2)
        self.item_birth = np.where(rng.random(spec.items) < 0.7, 0, rng.integers(0, spec.days, spec.items))
        self.item_birth[: min(c, spec.items)] = 0
        self.taste_a = rng.dirichlet(np.full(c, 0.3), size=spec.users)
        self.taste_b = rng.dirichlet(np.full(c, 0.3), size=spec.users)
        self.user_activity = np.exp(rng.normal(0.0, 1.0, size=spec.users))
        self.user_birth = np.where(rng.random(spec.users) < 0.6, 0, rng.integers(0, spec.days, spec.users))
        self.user_birth[0] = 0
        self.by_category: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for cat in range(c):
            members = np.flatnonzero(self.item_category == cat)
            members = members[np.argsort(self.item_birth[members], kind="stable")]
            self.by_category.append(
                (members, self.item_birth[members], np.cumsum(self.item_popularity[members]))
            )
        hours = np.arange(24)
        rhythm = 1.2 + np.cos(2 * np.pi * (hours - 20) / 24)
        self.hour_p = rhythm / rhythm.sum()

    def taste(self, users: np.ndarray, day: int, days: int) -> np.ndarray:
        drift = 0.6 * day / max(days - 1, 1)
        return (1 - drift) * self.taste_a[users] + drift * self.taste_b[users]


def generate(spec: GeneratorSpec, out: str | Path) -> Manifest:
    """Write the data set below ``out`` (``date=YYYY-MM-DD/part-NNNNN.jsonl[.gz]``)."""
    rng = np.random.default_rng(spec.seed)
    world = _World(spec, rng)
    manifest = Manifest(spec={k: str(v) for k, v in asdict(spec).items()})
    weights = 1.0 + 0.15 * np.sin(np.arange(spec.days) * 2 * np.pi / 7)
    per_day = np.floor(spec.events * weights / weights.sum()).astype(int)
    per_day[-1] += spec.events - per_day.sum()
    late_buffer: dict[int, list[pd.DataFrame]] = defaultdict(list)
    counter = 0
    for day in range(spec.days):
        valid = _day_events(spec, world, rng, day, int(per_day[day]), counter)
        counter += len(valid)
        manifest.valid_events += len(valid)
        for etype, n in valid["event_type"].value_counts().items():
            manifest.events_by_type[str(etype)] = manifest.events_by_type.get(str(etype), 0) + int(n)
        is_late = rng.random(len(valid)) < spec.late_fraction
        if day < spec.days - 1:
            shift = rng.integers(1, 4, size=int(is_late.sum()))
            late = valid[is_late].assign(_to=np.minimum(day + shift, spec.days - 1))
            for target, part in late.groupby("_to"):
                late_buffer[int(target)].append(part.drop(columns="_to"))
            manifest.late_events += int(is_late.sum())
            valid = valid[~is_late]
        todays = pd.concat([valid, *late_buffer.pop(day, [])], ignore_index=True)
        dup_mask = rng.random(len(todays)) < spec.duplicate_fraction
        manifest.duplicates += int(dup_mask.sum())
        lines = records_to_lines(_to_raw(todays, rng))
        lines += [lines[i] for i in np.flatnonzero(dup_mask)]
        lines += _bad_lines(spec, rng, todays, manifest)
        order = rng.permutation(len(lines))
        folder = day_folder(out, (spec.start + timedelta(days=day)).isoformat())
        name = f"part-{day:05d}.jsonl" + (".gz" if spec.compress else "")
        manifest.bytes += write_lines(folder / name, [lines[i] for i in order], compress=spec.compress)
        manifest.lines += len(lines)
        manifest.files += 1
    payload = {**asdict(manifest), "bad": manifest.bad}
    (Path(out) / "_manifest.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return manifest


def _day_events(spec: GeneratorSpec, world: _World, rng: np.random.Generator, day: int,
                target: int, first_id: int) -> pd.DataFrame:
    """Exactly ``target`` valid events for one day, in session order."""
    frames: list[pd.DataFrame] = []
    have = 0
    alive_users = np.flatnonzero(world.user_birth <= day)
    user_p = world.user_activity[alive_users] / world.user_activity[alive_users].sum()
    while have < target:
        sessions = int(min(SESSION_CHUNK, max(16, (target - have) // 3)))
        frame = _sessions(spec, world, rng, day, sessions, alive_users, user_p)
        frames.append(frame)
        have += len(frame)
    events = pd.concat(frames, ignore_index=True).iloc[:target].copy()
    events["event_id"] = [f"ev-{spec.seed}-{first_id + i}" for i in range(len(events))]
    return events


def _sessions(spec: GeneratorSpec, world: _World, rng: np.random.Generator, day: int, n: int,
              alive_users: np.ndarray, user_p: np.ndarray) -> pd.DataFrame:
    users = rng.choice(alive_users, size=n, p=user_p)
    hour = rng.choice(24, size=n, p=world.hour_p)
    day0 = datetime.combine(spec.start, datetime.min.time(), tzinfo=UTC).timestamp() + day * 86400
    start = day0 + hour * 3600 + rng.uniform(0, 3600, size=n)
    steps = rng.geometric(0.3, size=n)
    session = np.repeat(np.arange(n), steps)
    gaps = rng.exponential(45.0, size=len(session))
    cum = np.cumsum(gaps)
    offsets = np.concatenate([[0.0], cum[np.cumsum(steps)[:-1] - 1]])
    ts = start[session] + cum - np.repeat(offsets, steps)
    user = users[session]
    taste = world.taste(user, day, spec.days)
    category = (taste.cumsum(axis=1) < rng.random((len(session), 1))).sum(axis=1)
    category = np.minimum(category, taste.shape[1] - 1)
    item = np.empty(len(session), dtype=np.int64)
    for cat, (members, births, cumpop) in enumerate(world.by_category):
        rows = np.flatnonzero(category == cat)
        if len(rows) == 0:
            continue
        alive = max(1, int(np.searchsorted(births, day, side="right")))
        pick = np.searchsorted(cumpop[:alive], rng.random(len(rows)) * cumpop[alive - 1])
        item[rows] = members[np.minimum(pick, alive - 1)]
    category = world.item_category[item]
    affinity = taste[np.arange(len(session)), category] / taste.max(axis=1)
    is_search = rng.random(len(session)) < 0.08
    click = ~is_search & (rng.random(len(session)) < 0.15 + 0.45 * affinity)
    cart = click & (rng.random(len(session)) < 0.15 + 0.35 * affinity)
    buy = cart & (rng.random(len(session)) < 0.35 + 0.35 * affinity)
    parts = []
    for etype, mask, delay in (("view", ~is_search, 0.0), ("click", click, 4.0),
                               ("add_to_cart", cart, 30.0), ("purchase", buy, 90.0),
                               ("search", is_search, 0.0)):
        idx = np.flatnonzero(mask)
        parts.append(pd.DataFrame({
            "ts": ts[idx] + delay + (rng.uniform(0, delay, len(idx)) if delay else 0.0),
            "user": user[idx], "item": item[idx], "category": category[idx],
            "price": world.item_price[item[idx]],
            "session": session[idx], "event_type": etype,
        }))
    frame = pd.concat(parts, ignore_index=True)
    frame = frame.sort_values(["session", "ts"], kind="stable").reset_index(drop=True)
    frame["session"] = [f"s-{spec.seed}-{day}-{s}-{u}" for s, u in zip(frame["session"], frame["user"])]
    return frame


def _to_raw(events: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The raw log record for each event (ids as text, mixed timestamp formats)."""
    ts_ms = np.round(events["ts"].to_numpy() * 1000).astype(np.int64)
    iso = pd.to_datetime(ts_ms, unit="ms", utc=True).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    iso = [s[:-4] + "Z" for s in iso]
    as_epoch = rng.random(len(events)) < 0.3
    event_ts = np.where(as_epoch, ts_ms.astype(object), np.asarray(iso, dtype=object))
    etype = events["event_type"].to_numpy()
    is_search = etype == "search"
    raw = pd.DataFrame({
        "event_id": events["event_id"].to_numpy(),
        "event_ts": event_ts,
        "user_id": ["u" + str(u) for u in events["user"].to_numpy()],
        "event_type": etype,
        "item_id": masked(~is_search, ["i" + str(i) for i in events["item"].to_numpy()]),
        "category_id": ["c" + str(c) for c in events["category"].to_numpy()],
        "price": masked(~is_search, events["price"].to_numpy()),
        "quantity": masked(np.isin(etype, ("add_to_cart", "purchase")), rng.geometric(0.7, size=len(events))),
        "session_id": events["session"].to_numpy(),
        "query": masked(is_search, ["cat" + str(c) + " deals" for c in events["category"].to_numpy()]),
    })
    return raw


def _bad_lines(spec: GeneratorSpec, rng: np.random.Generator, todays: pd.DataFrame,
               manifest: Manifest) -> list[str]:
    """Bad records of every kind, about ``bad_fraction`` of the day's events."""
    n = int(round(spec.bad_fraction * len(todays)))
    if n == 0 or todays.empty:
        return []
    kinds = [BAD_KINDS[i % (len(BAD_KINDS) - 1)] for i in rng.permutation(n)]
    if manifest.bad_by_kind.get("oversized_line", 0) < MAX_OVERSIZED:
        kinds[0] = "oversized_line"
    sample = records_to_lines(_to_raw(todays.iloc[rng.integers(0, len(todays), n)].copy(), rng))
    lines = []
    for i, (kind, line) in enumerate(zip(kinds, sample)):
        record = json.loads(line)
        record["event_id"] = f"bad-{spec.seed}-{manifest.bad + i}"
        record.setdefault("item_id", "i0")
        record["item_id"] = record["item_id"] or "i0"
        if record["event_type"] == "search":
            record["event_type"] = "view"
        lines.append(_corrupt(kind, record, spec))
        manifest.bad_by_kind[kind] = manifest.bad_by_kind.get(kind, 0) + 1
    return lines


def _corrupt(kind: str, record: dict[str, object], spec: GeneratorSpec) -> str:
    if kind == "unparseable":
        return json.dumps(record)[: -7]
    if kind == "not_an_object":
        return json.dumps([record["event_id"], record["user_id"]])
    if kind == "ill_typed":
        record["price"] = "cheap"
    elif kind == "missing_field":
        record.pop("user_id")
    elif kind == "unknown_event_type":
        record["event_type"] = "wishlist"
    elif kind == "bad_timestamp":
        record["event_ts"] = "2024-13-45T99:00:00Z"
    elif kind == "future_timestamp":
        record["event_ts"] = "2999-01-01T00:00:00Z"
    elif kind == "negative_price":
        record["price"] = -4.99
    elif kind == "bad_quantity":
        record["quantity"] = 0
    elif kind == "missing_item_id":
        record["item_id"] = None
    elif kind == "oversized_line":
        record["query"] = "x" * spec.oversized_bytes
    return json.dumps(record, separators=(",", ":"))
