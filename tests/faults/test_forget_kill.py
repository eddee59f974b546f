"""``recsys forget`` SIGKILLed at its fault points, then run again while the stream runs: the person
is gone everywhere, the features equal a refresh over the remaining events, one run's audit row is
written, and the stream goes on, dropping the person's later events.

Killed first after the deletes (before the online store and the refresh), then, in the re-run,
after the refresh (before the history purge); the third run completes while a stream processes
new files (it waits for the forget's leases). The landing folder is the home's own, so the raw
files are rewritten too.
"""

from __future__ import annotations

import gzip
import json
import signal
from collections import Counter
from pathlib import Path

import pytest

from recsys_lib.core.config import load_config
from recsys_lib.core.privacy import stored_id
from recsys_lib.ingest.landing import user_of_line
from recsys_lib.lake import open_lake
from tests.faults.helpers import (
    assert_features_match_recomputation,
    generate,
    ok,
    recsys,
    start,
    stream_batches,
    wait_for,
)
from tests.spark.helpers import files_holding, raw_line, write_lines

pytestmark = [pytest.mark.faults, pytest.mark.spark]


def _drop(folder: Path, name: str, lines: list[str]) -> None:
    """Write ``lines`` beside ``folder`` and rename the file in (atomic, as producers must)."""
    staging = folder.with_name(folder.name + "-staging")
    write_lines(staging, name, lines)
    folder.mkdir(parents=True, exist_ok=True)
    (staging / name).rename(folder / name)


def _new_events(home: Path) -> int:
    return sum(b["new_events"] for b in stream_batches(home))


def _most_active(landing: Path) -> str:
    """The generator's raw user id with the most lines (its pseudonym is what the tables hold)."""
    seen: Counter[str] = Counter()
    for path in landing.rglob("*.gz"):
        seen.update(user_of_line(line) or "" for line in gzip.decompress(path.read_bytes()).decode().splitlines())
    return max((n, u) for u, n in seen.items() if u)[1]


@pytest.mark.timeout(900)
def test_a_forget_killed_twice_completes_on_the_next_run(spark, tmp_path):
    home = tmp_path / "home"
    landing = generate(home / "landing" / "raw", events=3000, seed=5)
    ok(recsys(home, "ingest", "--input", str(landing)))
    ok(recsys(home, "features", "refresh"))  # also loads the online store (SQLite)
    cfg = load_config(overrides=[f"home={home}"])
    person = _most_active(landing)
    pseudonym = stored_id(cfg, person)
    places = [home / "lake" / "events", home / "lake" / "user_features", home / "online"]
    assert all(files_holding(p, [pseudonym]) for p in places)  # the person is there to forget
    # the generator's ids are short: look for the raw id as a whole JSON value
    raw = f'"user_id":"{person}"'
    assert files_holding(landing, [raw])

    for point in ("forget_after_deletes", "forget_before_purge"):
        killed = recsys(home, "forget", "--user", person, fault=point)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
    live, log = tmp_path / "live", tmp_path / "stream.log"
    _drop(live, "before.jsonl", [raw_line(f"live-{n}", "someone-else", "view", "2024-01-02T12:00:00Z")
                                 for n in range(3)])
    stream = start(home, "stream", "--input", str(live), "--trigger", "0.5s", log=log)
    try:
        wait_for("the stream's first batch", lambda: _new_events(home) == 3, log)
        summary = tmp_path / "forget.json"
        ok(recsys(home, "forget", "--user", person, "--summary-json", str(summary)))
        _drop(live, "after.jsonl", [raw_line(f"late-{n}", person if n < 2 else "someone-else", "click",
                                             "2024-01-02T13:00:00Z") for n in range(4)])
        wait_for("a batch after the forget", lambda: _new_events(home) == 5, log)
        assert sum(b["forgotten"] for b in stream_batches(home)) == 2  # the person's late events, dropped
        assert stream.poll() is None  # the stream ran through the forget
    finally:
        stream.send_signal(signal.SIGKILL)
        stream.wait(timeout=60)
    done = json.loads(summary.read_text())
    assert done["rows_deleted"]["events"] == 0  # the first killed run deleted them; this one found none left

    assert files_holding(home, [pseudonym, raw]) == []
    lake = open_lake(spark, cfg)
    logged = lake.read("forget_log").collect()
    assert len(logged) == 1 and json.loads(logged[0]["rows_deleted"])["landing_lines"] > 0
    assert_features_match_recomputation(spark, lake, cfg, tmp_path / "refreshed")
    assert " 0 mismatch line(s)" in ok(recsys(home, "online", "verify"))  # the store agrees with the tables
