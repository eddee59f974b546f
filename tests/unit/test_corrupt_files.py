"""Raw files that cannot be read as lines at all are found before Spark reads them (recsys_lib.ingest.corrupt)."""

from __future__ import annotations

import gzip

import pytest

from recsys_lib.ingest.corrupt import check_file, find_corrupt, list_raw_files
from recsys_lib.ingest.validate import RAW_SUFFIXES

pytestmark = pytest.mark.unit
LINES = b"".join(b'{"event_id": "e%d", "user_id": "u1"}\n' % i for i in range(2000))


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def test_good_files_pass(tmp_path):
    assert check_file(_write(tmp_path / "a.jsonl", LINES)) is None
    assert check_file(_write(tmp_path / "a.jsonl.gz", gzip.compress(LINES))) is None
    # two gzip members one after the other (what `cat a.gz b.gz` gives) are one valid stream
    assert check_file(_write(tmp_path / "c.jsonl.gz", gzip.compress(LINES) + gzip.compress(LINES))) is None
    # a multi-byte character cut by the 64 KiB sniff is not "binary"
    text = ("é" * 40000).encode()
    assert check_file(_write(tmp_path / "u.jsonl", b'{"q": "' + text + b'"}\n')) is None


@pytest.mark.parametrize(("name", "data", "detail"), [
    ("cut.jsonl.gz", gzip.compress(LINES)[:-200], "ends early"),
    ("notgz.jsonl.gz", LINES, "not a readable gzip stream"),
    ("flipped.jsonl.gz", (lambda z: z[:40] + bytes([z[40] ^ 0xFF]) + z[41:])(gzip.compress(LINES)),
     "not a readable gzip stream"),
    ("image.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 10, "binary content"),
    ("latin1.jsonl", "{\"q\": \"caf\xe9\"}\n".encode("latin-1") * 10, "not UTF-8"),
], ids=["truncated-gzip", "plain-text-named-gz", "corrupt-gzip", "binary", "not-utf8"])
def test_corrupt_files_are_named_with_the_reason(tmp_path, name, data, detail):
    path = _write(tmp_path / name, data)
    found = check_file(path)
    assert found is not None and found.path == path and detail in found.detail and found.bytes == len(data)


def test_a_stray_bad_byte_is_left_to_the_line_validation_but_a_zero_filled_block_is_not(tmp_path):
    some = LINES[:2000]  # about 60 lines, all inside the sniffed head
    stray = some + b'{"q": "a\x00b"}\n' + '{"q": "caf\xe9"}\n'.encode("latin-1")
    assert check_file(_write(tmp_path / "stray.jsonl", stray)) is None  # two lines to quarantine, not the file
    zeroed = some + b"\x00" * 4096 + some  # a block lost in a crash
    found = check_file(_write(tmp_path / "zeroed.jsonl", zeroed))
    assert found is not None and "4096 NUL" in found.detail


def test_find_corrupt_among_good_files_and_list_raw_files(tmp_path):
    good = _write(tmp_path / "d=1" / "a.jsonl.gz", gzip.compress(LINES))
    bad = _write(tmp_path / "d=2" / "b.jsonl.gz", gzip.compress(LINES)[:100])
    _write(tmp_path / "d=2" / ".hidden.jsonl", LINES)
    _write(tmp_path / "_tmp" / "c.jsonl", LINES)
    _write(tmp_path / "notes.txt", b"x")
    files = list_raw_files(str(tmp_path), RAW_SUFFIXES)
    assert files == sorted([good, bad])
    assert [c.path for c in find_corrupt(files)] == [bad]
