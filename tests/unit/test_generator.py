from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from recsys_lib.datagen.synthetic import BAD_KINDS, GeneratorSpec, generate

pytestmark = pytest.mark.unit


def _read(out: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(out.glob("date=*/*.jsonl*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    rows.append({**record, "_folder": path.parent.name[5:]})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gen")
    generate(GeneratorSpec(users=400, items=300, days=6, events=30_000, seed=3), out)
    return out, json.loads((out / "_manifest.json").read_text())


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    spec = GeneratorSpec(users=50, items=40, days=2, events=800, seed=11)
    generate(spec, tmp_path / "a")
    generate(spec, tmp_path / "b")
    generate(GeneratorSpec(users=50, items=40, days=2, events=800, seed=12), tmp_path / "c")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.gz"))
    assert files
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert any((tmp_path / "a" / r).read_bytes() != (tmp_path / "c" / r).read_bytes() for r in files)


def test_manifest_accounts_for_every_line(dataset):
    out, manifest = dataset
    lines = 0
    for path in out.glob("date=*/*.gz"):
        with gzip.open(path, "rt") as fh:
            lines += len(fh.read().splitlines())
    assert lines == manifest["lines"]
    assert manifest["lines"] == manifest["valid_events"] + manifest["duplicates"] + manifest["bad"]
    assert manifest["valid_events"] == 30_000
    assert set(manifest["bad_by_kind"]) == set(BAD_KINDS)


def test_distributions_carry_the_planted_signal(dataset):
    out, manifest = dataset
    df = _read(out)
    good = df[df["event_id"].str.startswith("ev-")].drop_duplicates("event_id")
    counts = good["event_type"].value_counts()
    # funnel: each stage is rarer than the one before it
    assert counts["view"] > counts["click"] > counts["add_to_cart"] > counts["purchase"] > 0
    assert counts["search"] > 0
    # power-law popularity: the top 10% of items get far more than 10% of views
    views = good[good["event_type"] == "view"]["item_id"].value_counts()
    top = views.iloc[: max(1, len(views) // 10)].sum() / views.sum()
    assert top > 0.3
    # taste: a user's favourite category gets far more than a uniform share of their views
    per_user = good[good["event_type"] == "view"].groupby("user_id")["category_id"]
    top_share = per_user.agg(lambda s: s.value_counts().iloc[0] / len(s))[per_user.size() >= 20]
    n_categories = good["category_id"].nunique()
    assert top_share.median() > 2.0 / n_categories
    # daily rhythm: the evening is busier than the small hours
    ts = pd.to_datetime(good["event_ts"].map(lambda v: v if isinstance(v, str) else pd.Timestamp(v, unit="ms",
                                                                                                  tz="UTC")),
                        utc=True, format="mixed")
    hours = ts.dt.hour.value_counts()
    assert hours.reindex(range(18, 23)).sum() > 2 * hours.reindex(range(3, 8)).fillna(0).sum()
    # new users keep appearing after the first day
    first_seen = good.groupby("user_id")["_folder"].min()
    assert (first_seen > first_seen.min()).sum() > 0
    # late events sit in a folder after their own date
    event_day = ts.dt.strftime("%Y-%m-%d")
    assert (good["_folder"].to_numpy() > event_day.to_numpy()).sum() >= manifest["late_events"] * 0.9


def test_duplicates_are_exact_copies(dataset):
    out, manifest = dataset
    df = _read(out)
    good = df[df["event_id"].str.startswith("ev-")]
    assert len(good) - good["event_id"].nunique() == manifest["duplicates"]


def test_bad_spec_is_refused():
    with pytest.raises(ValueError, match="--events"):
        GeneratorSpec(events=0)
    with pytest.raises(ValueError, match="bad_fraction"):
        GeneratorSpec(bad_fraction=1.5)
