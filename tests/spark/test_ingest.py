from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_lib.datagen.synthetic import GeneratorSpec, generate
from recsys_lib.ingest.commit import ingest_frame
from recsys_lib.ingest.validate import read_raw
from recsys_lib.pipelines.ingest import IngestError, run_ingest

pytestmark = pytest.mark.spark

NOW = datetime(2024, 6, 1, tzinfo=UTC)
#: generator bad kind -> the quarantine reason ingestion must give it
EXPECTED_REASON = {
    "unparseable": "unparseable", "not_an_object": "not_an_object", "ill_typed": "ill_typed:price",
    "missing_field": "missing_field:user_id", "unknown_event_type": "unknown_event_type:event_type",
    "bad_timestamp": "bad_timestamp:event_ts", "future_timestamp": "future_timestamp:event_ts",
    "negative_price": "negative_price:price", "bad_quantity": "bad_quantity:quantity",
    "missing_item_id": "missing_field:item_id", "oversized_line": "oversized_line",
}


@pytest.fixture
def corpus(tmp_path):
    out = tmp_path / "landing"
    generate(GeneratorSpec(users=200, items=150, days=3, events=6_000, bad_fraction=0.05,
                           duplicate_fraction=0.02, seed=5), out)
    return out, json.loads((out / "_manifest.json").read_text())


def test_reconciles_with_what_the_generator_planted(spark, lake, cfg, corpus, tmp_path):
    out, manifest = corpus
    summary_path = tmp_path / "summary.json"
    summary = run_ingest(spark, lake, cfg, str(out), summary_json=str(summary_path), now=NOW)
    assert summary.input_records == manifest["lines"]
    assert summary.valid == manifest["valid_events"] == 6_000
    assert summary.duplicates == manifest["duplicates"]
    assert summary.quarantined == manifest["bad"]
    expected = {EXPECTED_REASON[k]: n for k, n in manifest["bad_by_kind"].items()}
    assert summary.quarantined_by_reason == expected
    assert summary.balanced
    written = json.loads(summary_path.read_text())
    assert written["balanced"] is True and written["input_records"] == manifest["lines"]
    events = lake.read("events")
    assert events.count() == 6_000
    assert events.select("event_id").distinct().count() == 6_000
    assert lake.read("events_quarantine").count() == manifest["bad"]
    row = events.first()
    assert row["source_file"].endswith(".jsonl.gz") and row["ingest_run_id"] == summary.run_id
    assert row["event_date"] == row["event_ts"].date()


def test_reingesting_changes_nothing(spark, lake, cfg, corpus):
    out, manifest = corpus
    first = run_ingest(spark, lake, cfg, str(out), now=NOW)
    before = sorted(r["event_id"] for r in lake.read("events").select("event_id").collect())
    second = run_ingest(spark, lake, cfg, str(out), now=NOW)
    assert (second.valid, second.quarantined) == (0, 0)
    assert second.duplicates == second.input_records == manifest["lines"]
    assert second.duplicates_by_kind["duplicate_existing"] == manifest["valid_events"]
    assert second.duplicates_by_kind["already_quarantined"] == manifest["bad"]
    assert lake.version("events") == first.events_version
    assert lake.version("events_quarantine") == first.quarantine_version
    assert sorted(r["event_id"] for r in lake.read("events").select("event_id").collect()) == before


@pytest.mark.parametrize("broadcast_up_to", [200_000, 0], ids=["broadcast-batch-keys", "shuffle-all-keys"])
def test_overlapping_second_folder_only_adds_new_events(spark, lake, cfg, tmp_path, monkeypatch, broadcast_up_to):
    # both ways of looking up stored keys (small batches broadcast their keys) must label alike
    monkeypatch.setattr("recsys_lib.ingest.dedup.BROADCAST_BATCH_KEYS", broadcast_up_to)
    a, b = tmp_path / "a" / "date=2024-01-01", tmp_path / "b" / "date=2024-01-01"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    line = '{{"event_id":"{}","event_ts":"2024-01-01T00:00:00Z","user_id":"{}","event_type":"view","item_id":"i"}}'
    (a / "x.jsonl").write_text("\n".join(line.format(i, "u") for i in ("e1", "e2")) + "\n")
    (b / "y.jsonl").write_text(line.format("e2", "u") + "\n" + line.format("e3", "first") + "\n")
    (b / "z.jsonl").write_text("\n".join(line.format("e3", "second") for _ in range(2)) + "\n")
    run_ingest(spark, lake, cfg, str(tmp_path / "a"), now=NOW)
    s = run_ingest(spark, lake, cfg, str(tmp_path / "b"), now=NOW)
    assert (s.valid, s.duplicates) == (1, 3)
    assert s.duplicates_by_kind == {"duplicate_in_batch": 2, "duplicate_existing": 1, "already_quarantined": 0}
    rows = sorted((r[0], r[1]) for r in lake.read("events").select("event_id", "user_id").collect())
    # of conflicting copies, the one from the first file (by name) is kept
    assert rows == [("e1", "u"), ("e2", "u"), ("e3", "first")]


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# NUL bytes are left out: enough of them make the file binary, quarantined whole (tests/unit/test_corrupt_files.py)
@given(garbage=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x00"),
                                max_size=80), min_size=1, max_size=30))
def test_random_garbage_is_quarantined_and_balanced(spark, lake, cfg, tmp_path_factory, garbage):
    folder = tmp_path_factory.mktemp("garbage") / "date=2024-01-01"
    folder.mkdir()
    good = '{"event_id":"ok-1","event_ts":"2024-01-01T00:00:00Z","user_id":"u","event_type":"view","item_id":"i"}'
    (folder / "g.jsonl").write_text("\n".join([good, *garbage]) + "\n", encoding="utf-8")
    s = run_ingest(spark, lake, cfg, str(folder.parent), now=NOW)
    assert s.balanced
    assert s.input_records == len(garbage) + 1
    assert s.valid + s.duplicates_by_kind["duplicate_existing"] == 1  # the good line, new or seen before


def test_missing_input_is_a_clear_error(spark, lake, cfg, tmp_path):
    with pytest.raises(IngestError, match="does not exist"):
        run_ingest(spark, lake, cfg, str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="holds no raw files"):
        run_ingest(spark, lake, cfg, str(tmp_path / "empty"))


def _truncate_one(out):
    """Cut the first day's gzip file short (an interrupted upload); returns its path and its line count."""
    import gzip

    victim = sorted(out.rglob("*.jsonl.gz"))[0]
    lines = len(gzip.decompress(victim.read_bytes()).splitlines())
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    return victim, lines


def test_a_truncated_gzip_is_quarantined_whole_and_the_rest_ingested(spark, lake, cfg, corpus):
    out, manifest = corpus
    victim, victim_lines = _truncate_one(out)
    summary = run_ingest(spark, lake, cfg, str(out), now=NOW)
    assert summary.quarantined_files == [str(victim)]
    assert summary.input_records == manifest["lines"] - victim_lines > 0 and summary.balanced
    files = lake.read("quarantined_files").collect()
    assert [(r["source_file"], r["reason"], r["ingest_run_id"]) for r in files] == [
        (str(victim), "corrupt_file", summary.run_id)]
    assert "ends early" in files[0]["detail"]
    events = lake.read("events")
    assert events.where(events.source_file.endswith(victim.name)).count() == 0
    assert lake.read("events").count() == summary.valid > 0


def test_a_stream_batch_with_a_truncated_gzip_goes_on(spark, lake, cfg, corpus, tmp_path):
    from recsys_lib.streaming.job import last_batches, run_stream

    out, manifest = corpus
    victim, victim_lines = _truncate_one(out)
    cfg = cfg.model_copy(update={"streaming": cfg.streaming.model_copy(update={"checkpoint_dir": str(
        tmp_path / "checkpoint")})})
    reports = run_stream(spark, lake, cfg, str(out), available_now=True)  # before: the batch failed, every restart
    assert sum(r["rows_in"] for r in reports) == manifest["lines"] - victim_lines
    assert [c for r in reports for c in r["corrupt_files"]] == [str(victim)]
    assert [r["source_file"] for r in lake.read("quarantined_files").collect()] == [str(victim)]
    assert lake.read("events").count() == sum(r["new_events"] for r in reports) > 0
    assert [c for b in last_batches(cfg) for c in b["corrupt_files"]] == [str(victim)]


@pytest.mark.parametrize("overlap", [True, False], ids=["overlapping", "disjoint"])
def test_two_unleased_commits_at_once_store_each_event_once(spark, lake, cfg, corpus, tmp_path, monkeypatch, caplog,
                                                            overlap):
    # Both deduplicate against the same events version (a barrier holds each first commit until both are
    # ready). The second commit is refused (optimistic concurrency on that version). Overlapping folders:
    # that run deduplicates again and finds the first run's events. Disjoint ones: the appends in between
    # share no event id with its rows, so the same files are committed on top. Before, both appended
    # blindly and the overlap was stored twice.
    import logging
    import shutil
    import threading

    out, manifest = corpus
    days = sorted(out.glob("date=*"))
    first, second = tmp_path / "first", tmp_path / "second"
    for day in days if overlap else days[:1]:
        shutil.copytree(day, first / day.name)
    for day in days[1:]:  # overlapping: the last two days a second time; disjoint: only those
        shutil.copytree(day, second / day.name)
    results, errors = {}, []
    both_ready, waited = threading.Barrier(2, timeout=300), set()
    append = lake.append

    def append_when_both_are_ready(spec, *args, **kwargs):
        if spec.name == "events" and threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            both_ready.wait()
        return append(spec, *args, **kwargs)

    monkeypatch.setattr(lake, "append", append_when_both_are_ready)

    def ingest(name, folder):  # the commit core, without the job's writer lease (test_two_writers.py has that)
        try:
            results[name] = ingest_frame(spark, lake, cfg, read_raw(spark, str(folder)), run_id=name,
                                         source=str(folder), now=NOW)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    with caplog.at_level(logging.INFO, logger="recsys_lib"):
        threads = [threading.Thread(target=ingest, args=(n, f)) for n, f in (("first", first), ("second", second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
    assert not errors and set(results) == {"first", "second"}
    events = lake.read("events")
    assert events.count() == events.select("event_id").distinct().count() == manifest["valid_events"]
    assert sum(r.valid for r in results.values()) == manifest["valid_events"]
    assert all(r.balanced for r in results.values())
    recomputed = "another writer appended to events since this run deduplicated" in caplog.text
    committed_on_top = "do not touch what was computed; committing on top" in caplog.text
    assert (recomputed, committed_on_top) == ((True, False) if overlap else (False, True))
