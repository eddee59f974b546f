"""Raw files that cannot be read as lines at all: found before Spark reads them, and quarantined whole.

A truncated or corrupt ``.gz`` makes Spark's text reader fail the whole job, so one
bad upload would crash-loop the stream or fail every batch ingest. Each file is
checked first, on the driver, in parallel threads (zlib releases the GIL):

* a ``.gz`` must decompress to its end (a cut or damaged stream is ``corrupt_file``);
* the content must look like text: in its first 64 KiB (the sniff), NUL bytes and bytes
  that do not decode as UTF-8 must each stay under 1%, with no run of 16 NULs (a
  zero-filled block). The sniff is a cheap guard against a wrong file (an image, a
  Latin-1 export, a block lost in a crash), not a full scan: a stray bad byte, or bad
  bytes further into a file, reach the line validation, which quarantines their lines.

A corrupt file is recorded in the ``quarantined_files`` table (path, reason, detail,
size, run) and its lines are not read: none of them reaches ``events``, and the
ingest summary counts the file. Fix or re-upload it under a new name.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
from pyarrow import fs as pafs
from pyspark.sql import types as T

from recsys_lib.core.schema import EVENTS_TABLE, QUARANTINE_TABLE
from recsys_lib.ingest.commit import txn_app
from recsys_lib.lake import CommitResult, Lake, TableSpec
from recsys_lib.lake.files import filesystem_for, spark_to_arrow

log = logging.getLogger(__name__)
QUARANTINED_FILES_TABLE = "quarantined_files"
QUARANTINED_FILES_SCHEMA = T.StructType([
    T.StructField("source_file", T.StringType(), False),
    T.StructField("reason", T.StringType(), False),
    T.StructField("detail", T.StringType(), False),
    T.StructField("bytes", T.LongType(), False),
    T.StructField("ingest_run_id", T.StringType(), False),
    T.StructField("ingested_at", T.TimestampType(), False),
])
QUARANTINED_FILES_SPEC = TableSpec(QUARANTINED_FILES_TABLE, QUARANTINED_FILES_SCHEMA, ())
#: Every table an ingest (batch or stream) writes: one writer lease covers them all.
INGEST_TABLES = (EVENTS_TABLE, QUARANTINE_TABLE, QUARANTINED_FILES_TABLE)
CORRUPT_FILE = "corrupt_file"
_SNIFF = 64 * 1024
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CorruptFile:
    """A raw file that was quarantined whole."""

    path: str
    detail: str
    bytes: int


def check_file(path: str) -> CorruptFile | None:
    """None if ``path`` reads as text lines; else why not (see the module docstring)."""
    fs, inner = filesystem_for(path)
    size = fs.get_file_info(inner).size or 0
    head = b""
    try:
        with fs.open_input_stream(inner, compression=None) as stream:
            if path.endswith(".gz"):
                inflate = zlib.decompressobj(wbits=31)  # gzip framing, checks the CRC at the end
                while chunk := stream.read(_CHUNK):
                    data = inflate.decompress(chunk)
                    while inflate.eof and inflate.unused_data:  # concatenated gzip members
                        rest = inflate.unused_data
                        inflate = zlib.decompressobj(wbits=31)
                        data += inflate.decompress(rest)
                    if len(head) < _SNIFF:
                        head += data[: _SNIFF - len(head)]
                if not inflate.eof:
                    return CorruptFile(path, "the gzip stream ends early (truncated upload?)", size)
            else:
                head = stream.read(_SNIFF)
    except zlib.error as exc:
        return CorruptFile(path, f"not a readable gzip stream: {exc}", size)
    return _not_text(path, head, size)


def _not_text(path: str, head: bytes, size: int) -> CorruptFile | None:
    """Why the sniffed ``head`` is not JSON-lines text, or None.

    A stray NUL or undecodable byte in one line is that line's problem (the line validation
    quarantines it); a file is refused whole only when NUL and undecodable bytes together
    are at least 1% of the sniff, or a run of NULs shows a zero-filled block (a write lost
    in a crash).
    """
    if not head:
        return None
    nuls = head.count(b"\x00")
    # bytes that are not UTF-8 each decode to U+FFFD; one cut character at the end of the sniff is not counted
    undecodable = head.decode("utf-8", errors="replace").count("\ufffd") - head.count("\ufffd".encode())
    if head[-3:].decode("utf-8", errors="replace").endswith("\ufffd"):
        undecodable -= 1
    if (nuls + undecodable) * 100 < len(head) and b"\x00" * 16 not in head:
        return None
    what = "binary content" if nuls else "not UTF-8 text"
    return CorruptFile(path, f"{what} ({nuls} NUL and {undecodable} undecodable bytes in the first {len(head)}), "
                             "not JSON lines", size)
    return None


def find_corrupt(paths: Sequence[str], threads: int = 4) -> list[CorruptFile]:
    """The corrupt files among ``paths`` (checked concurrently)."""
    if not paths:
        return []
    with ThreadPoolExecutor(max_workers=min(threads, len(paths)), thread_name_prefix="check-raw") as pool:
        return [c for c in pool.map(check_file, paths) if c is not None]


def list_raw_files(root: str, suffixes: Iterable[str]) -> list[str]:
    """Every raw file below ``root`` (recursively, hidden and ``_`` names skipped), as paths or URIs."""
    fs, inner = filesystem_for(root)
    ends = tuple(suffixes)
    found = []
    for info in fs.get_file_info(pafs.FileSelector(inner, recursive=True)):
        parts = info.path[len(inner):].split("/")
        if info.type == pafs.FileType.File and info.base_name.endswith(ends) and not any(
                p.startswith((".", "_")) for p in parts if p):
            found.append(root.rstrip("/") + info.path[len(inner.rstrip("/")):] if "://" in root else info.path)
    return sorted(found)


def quarantine_files(lake: Lake, corrupt: Sequence[CorruptFile], *, run_id: str, now: datetime,
                     app_id: str | None = None, batch_id: int | None = None) -> CommitResult | None:
    """Record ``corrupt`` in ``quarantined_files`` (an app transaction when ``app_id`` is given), logging each.

    A file already recorded (same path and size: a re-run after a crash, or the same folder
    ingested again) is not recorded twice.
    """
    if corrupt and app_id is None and lake.exists(QUARANTINED_FILES_TABLE):
        seen = lake.read_arrow(QUARANTINED_FILES_TABLE, columns=["source_file", "bytes"]).to_pylist()
        recorded = {(r["source_file"], r["bytes"]) for r in seen}
        for c in corrupt:
            if (c.path, c.bytes) in recorded:
                log.info("%s: %s is already in %s", run_id, c.path, QUARANTINED_FILES_TABLE)
        corrupt = [c for c in corrupt if (c.path, c.bytes) not in recorded]
    if not corrupt:
        return None
    for c in corrupt:
        log.warning("%s: quarantined %s whole (%s): %s", run_id, c.path, CORRUPT_FILE, c.detail)
    rows = pa.table({
        "source_file": [c.path for c in corrupt], "reason": [CORRUPT_FILE] * len(corrupt),
        "detail": [c.detail for c in corrupt], "bytes": [c.bytes for c in corrupt],
        "ingest_run_id": [run_id] * len(corrupt), "ingested_at": [now] * len(corrupt),
    }).cast(spark_to_arrow(QUARANTINED_FILES_SCHEMA))
    return lake.append_arrow(QUARANTINED_FILES_SPEC, rows, app_id=txn_app(app_id, QUARANTINED_FILES_TABLE),
                             batch_id=batch_id)
