"""A micro-batch's lines read from the checkpoint's file list equal what Spark's file source reads."""

from __future__ import annotations

import gzip
import json
import os
import time

import pyarrow as pa
import pytest

from recsys_lib.core.config import load_config
from recsys_lib.streaming.batch_files import BatchReadError, batch_files, batch_lines
from recsys_lib.streaming.job import source_stream

pytestmark = pytest.mark.spark

#: (file name, bytes): odd names, gzip, an empty line, no final newline, an empty file, non-ASCII text.
FILES = [
    ("plain.jsonl", b'{"a":1}\n{"a":2}\n'),
    ("with space.jsonl", b'{"b":1}\n\n{"b":2}\n'),
    ("per%cent #1.jsonl", b'{"c":1}'),
    ("caf\u00e9.jsonl", '{"d":"\u00fc\u20ac\U0001d11e"}\n'.encode()),
    ("packed.jsonl.gz", gzip.compress(b'{"e":1}\n{"e":2}\n') + gzip.compress(b'{"e":3}\n')),
    ("empty.jsonl", b""),
    *((f"f{n:02d}.jsonl", f'{{"n":{n}}}\n'.encode()) for n in range(8)),  # past a log compaction (every 10)
]
#: Files whose batch is left to Spark: a carriage return (Spark splits on it), bytes that are not UTF-8,
#: a byte-order mark.
SPARK_ONLY = [("crlf.jsonl", b'{"x":1}\r\n{"x":2}\r\n'), ("latin1.jsonl", b'{"y":"\xe9"}\n'),
              ("bom.jsonl", b'\xef\xbb\xbf{"z":1}\n')]


def _landing(folder, files):
    folder.mkdir()
    start = time.time() - 1000
    for n, (name, data) in enumerate(files):  # the file source takes files oldest first: one per batch
        path = folder / name
        path.write_bytes(data)
        os.utime(path, (start + n, start + n))
    return folder


def test_batch_lines_equal_the_file_source(spark, tmp_path):
    landing = _landing(tmp_path / "landing", FILES + SPARK_ONLY)
    checkpoint = str(tmp_path / "checkpoint")
    cfg = load_config(overrides=[f"home={tmp_path}", "streaming.max_files_per_trigger=1"])
    seen = {}

    def on_batch(batch, batch_id):
        def rows(table):  # as bytes: Spark passes bytes that are not UTF-8 through as they are
            return sorted(zip(*table.cast(pa.schema([("value", pa.binary()), ("source_file", pa.string())]))
                              .to_pydict().values(), strict=True))

        ours = batch_lines(checkpoint, batch_id, max_lines=1000)
        seen[batch_id] = (rows(batch.toArrow()), None if ours is None else rows(ours))

    query = (source_stream(spark, cfg, str(landing)).writeStream.foreachBatch(on_batch)
             .option("checkpointLocation", checkpoint).trigger(availableNow=True).start())
    query.awaitTermination()

    assert len(seen) == len(FILES) + len(SPARK_ONLY)  # one batch per file (the empty one's is empty)
    outcomes = [seen[b] for b in sorted(seen)]  # batch n holds file n
    for (name, _), (spark_rows, ours) in zip(FILES, outcomes, strict=False):
        assert ours == spark_rows, name
    for (name, _), (spark_rows, ours) in zip(SPARK_ONLY, outcomes[len(FILES):], strict=True):
        assert spark_rows and ours is None, name
    assert sum(len(rows) for rows, _ in outcomes[:len(FILES)]) == 2 + 3 + 1 + 1 + 3 + 0 + 8

    # Later, Spark deletes the plain log files a compaction covers: the compaction is read instead.
    sources = tmp_path / "checkpoint" / "sources" / "0"
    assert (sources / "9.compact").exists()
    before = {b: batch_files(checkpoint, b) for b in seen}
    for n in range(9):
        (sources / str(n)).unlink()
    assert {b: batch_files(checkpoint, b) for b in seen} == before


def test_unknown_batches_and_formats_fall_back(tmp_path, caplog):
    checkpoint = tmp_path / "checkpoint"
    assert batch_lines(str(checkpoint), 0, max_lines=10) is None  # no offset log yet
    (checkpoint / "offsets").mkdir(parents=True)
    (checkpoint / "offsets" / "0").write_text('v9\n{}\n{"logOffset":0}\n')
    assert batch_files(str(checkpoint), 0) is None  # a format this module does not know
    # a file on a scheme pyarrow cannot open: a named error with the cause (the stream logs it and asks Spark)
    (checkpoint / "offsets" / "0").write_text('v1\n{}\n{"logOffset":0}\n')
    (checkpoint / "sources" / "0").mkdir(parents=True)
    (checkpoint / "sources" / "0" / "0").write_text('v1\n{"path":"nosuch://b/x.jsonl","timestamp":1,"batchId":0}\n')
    assert batch_files(str(checkpoint), 0) == ["nosuch://b/x.jsonl"]
    with pytest.raises(BatchReadError, match="nosuch"):
        batch_lines(str(checkpoint), 0, max_lines=10)


def test_a_file_too_large_for_the_driver_is_left_to_spark(tmp_path):
    checkpoint, landing = tmp_path / "checkpoint", tmp_path / "landing"
    (checkpoint / "offsets").mkdir(parents=True)
    (checkpoint / "sources" / "0").mkdir(parents=True)
    landing.mkdir()
    (landing / "big.jsonl").write_bytes(b'{"a":1}\n' * 2000)  # 16,000 bytes: more than 10 lines x 1 KB
    (landing / "small.jsonl").write_bytes(b'{"a":1}\n' * 3)
    for batch, name in enumerate(("big.jsonl", "small.jsonl")):
        (checkpoint / "offsets" / str(batch)).write_text(f'v1\n{{}}\n{{"logOffset":{batch}}}\n')
        entry = {"path": (landing / name).as_uri(), "timestamp": 1, "batchId": batch}
        (checkpoint / "sources" / "0" / str(batch)).write_text("v1\n" + json.dumps(entry) + "\n")
    assert batch_lines(str(checkpoint), 0, max_lines=10) is None
    assert batch_lines(str(checkpoint), 1, max_lines=10).num_rows == 3
