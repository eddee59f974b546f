"""Forgetting people in the landing folder: their raw lines go, everything else stays byte for byte."""

from __future__ import annotations

import gzip
import os

import pytest

from recsys_lib.ingest.landing import scrub_landing, user_of_line

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("line", "user"), [
    ('{"event_id":"e1","user_id":"ann","item_id":"i1"}', "ann"),
    ('{"user_id" : 42, "event_id":"e2"}', "42"),
    ('{"event_id":"e3","user_id":"an\\"n"}', 'an"n'),
    ('{"event_id":"e4","user_id":"\\u0061nn"}', "ann"),  # an escaped id is read as the ingest reads it
    ('{"event_id":"e5","user_id":null}', None),
    ('{"event_id":"e6","user_id":"ann", "broken', "ann"),  # not JSON, still the person's line
    ('{"event_id":"e7"}', None),
])
def test_user_of_line(line, user):
    assert user_of_line(line) == user


def test_scrub_landing_removes_only_the_peoples_lines(tmp_path):
    day = tmp_path / "date=2024-01-01"
    day.mkdir()
    plain = ['{"event_id":"e1","user_id":"ann"}\n', '{"event_id":"e2","user_id":"annabel"}\n',
             '{"event_id":"e3","user_id":7}\n', '{"event_id":"e4","user_id":"bob"}\n']
    (day / "a.jsonl").write_text("".join(plain))
    (day / "b.jsonl.gz").write_bytes(gzip.compress("".join(plain[1:]).encode() + b'{"user_id":"\\u0061nn"}\n'))
    (day / "c.jsonl").write_text(plain[1])  # holds "ann" only inside another id: untouched
    (day / "d.jsonl.gz").write_bytes(gzip.compress(bytes(range(256)) * 20)[:200])  # truncated: reported, left alone
    (day / "_e.jsonl").write_text(plain[0])  # hidden from the ingest, so not a landing file
    os.utime(day / "a.jsonl", (1_000_000, 1_000_000))
    before_c = (day / "c.jsonl").read_bytes()

    done = scrub_landing(tmp_path, {"ann", "7"})
    assert (done.files_rewritten, done.lines_removed) == (2, 4)
    assert done.unreadable == [str(day / "d.jsonl.gz")]
    assert (day / "a.jsonl").read_text() == plain[1] + plain[3]
    assert os.stat(day / "a.jsonl").st_mtime == 1_000_000  # the stream's file ordering is kept
    assert gzip.decompress((day / "b.jsonl.gz").read_bytes()).decode() == plain[1] + plain[3]
    assert (day / "c.jsonl").read_bytes() == before_c
    assert (day / "_e.jsonl").read_text() == plain[0]
    assert sorted(p.name for p in day.iterdir()) == ["_e.jsonl", "a.jsonl", "b.jsonl.gz", "c.jsonl", "d.jsonl.gz"]
    assert scrub_landing(tmp_path, {"ann", "7"}).files_rewritten == 0  # a re-run finds nothing
