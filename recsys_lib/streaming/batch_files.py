"""The raw lines of a file-source micro-batch, read on the driver without a Spark job.

Spark's file source records, in the query's checkpoint, which files each
micro-batch reads: the offset log (``offsets/<batch>``) holds the source's log
offset at the end of the batch, and the source log (``sources/0/<n>``, compacted
every few batches into ``<n>.compact``) lists the files of each log offset, one
JSON entry per file. This is the same record Spark itself plans the batch from.
Reading it and the (small) files here saves the micro-batch's one Spark job,
which costs about 0.1 s when warm and 2 s on the first batch of a process.

The format is Spark's internal one (``v1``, unchanged since Spark 2), so every
step checks what it reads. Whenever anything is not as expected (a missing or
log not written yet, a line ending Spark's reader might split differently, bytes that
are not UTF-8) :func:`batch_lines` returns None, and where reading fails it raises
:class:`BatchReadError`; either way the caller reads the batch through Spark.
``tests/spark/test_batch_files.py`` compares both.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Collection
from urllib.parse import unquote, urlparse

import pyarrow as pa
from pyarrow import fs as pafs

from recsys_lib.lake.files import filesystem_for

log = logging.getLogger(__name__)

#: The file source's log format version this module understands.
_VERSION = "v1"
#: A file larger on disk than this many bytes per allowed line is left to Spark.
_BYTES_PER_LINE = 1024


class BatchReadError(RuntimeError):
    """The batch's file list or files could not be read here (the caller reads the batch with Spark)."""


#: What reading a checkpoint log or a raw file here can raise (gzip: EOFError for a cut stream).
_READ_FAILURES = (OSError, EOFError, ValueError, KeyError, pa.ArrowException)


def batch_lines(checkpoint: str, batch_id: int, max_lines: int) -> pa.Table | None:
    """Every line of micro-batch ``batch_id`` (columns ``value``, ``source_file``), as Spark reads them.

    :func:`checked_batch_files`, then :func:`files_lines` (a caller that needs the file list
    itself calls the two, so the checkpoint's logs are read once).

    Raises:
        BatchReadError: If the checkpoint's logs or a file could not be read or parsed.

    """
    return files_lines(checked_batch_files(checkpoint, batch_id), max_lines)


def checked_batch_files(checkpoint: str, batch_id: int) -> list[str] | None:
    """:func:`batch_files`, its read and parse failures raised as :class:`BatchReadError`."""
    try:
        return batch_files(checkpoint, batch_id)
    except _READ_FAILURES as exc:
        raise BatchReadError(f"{type(exc).__name__}: {exc}") from exc


def files_lines(files: list[str] | None, max_lines: int, skip: Collection[str] = ()) -> pa.Table | None:
    """Every line of ``files`` (a batch's, as the source log names them), as Spark reads them.

    Args:
        files: The batch's files (None: not known, so None is returned).
        max_lines: Stop reading once the batch holds more lines than this (the table
            returned then has more than ``max_lines`` rows, but not every line).
        skip: Files not to read: the corrupt ones, quarantined whole.

    Returns:
        The lines, or None if the batch cannot be read here with certainty.

    Raises:
        BatchReadError: If a file could not be read.

    """
    if files is None:
        return None
    try:
        values: list[str] = []
        sources: list[str] = []
        for uri in files:
            if uri in skip:
                continue
            lines = _lines(uri, max_bytes=max_lines * _BYTES_PER_LINE)
            if lines is None:
                return None
            values += lines
            sources += [_as_file_path(uri)] * len(lines)
            if len(values) > max_lines:
                break
        return pa.table({"value": pa.array(values, pa.string()), "source_file": pa.array(sources, pa.string())})
    except _READ_FAILURES as exc:
        raise BatchReadError(f"{type(exc).__name__}: {exc}") from exc


def batch_files(checkpoint: str, batch_id: int) -> list[str] | None:
    """The files (URIs, as Spark's ``_metadata.file_path``) of micro-batch ``batch_id``; None if unknown."""
    end = _log_offset(checkpoint, batch_id)
    start = _log_offset(checkpoint, batch_id - 1) if batch_id > 0 else -1
    if end is None or start is None or end < start:
        return None
    files: list[str] = []
    for offset in range(start + 1, end + 1):
        entries = _source_entries(checkpoint, offset)
        if entries is None:
            return None
        files += entries
    return files


def _read_text(path: str) -> str | None:
    fs, inner = filesystem_for(path)
    if fs.get_file_info(inner).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(inner) as stream:
        return stream.read().decode("utf-8")


def _log_offset(checkpoint: str, batch_id: int) -> int | None:
    """The file source's log offset at the end of ``batch_id`` (the offset log's one source line)."""
    text = _read_text(f"{checkpoint.rstrip('/')}/offsets/{batch_id}")
    if text is None:
        return None
    lines = text.splitlines()
    if len(lines) != 3 or lines[0] != _VERSION:  # version, batch metadata, one source
        return None
    offset = json.loads(lines[2])
    return int(offset["logOffset"]) if isinstance(offset, dict) and "logOffset" in offset else None


def _source_entries(checkpoint: str, offset: int) -> list[str] | None:
    """The files the source log lists for log offset ``offset`` (its own file, or the compaction holding it)."""
    folder = f"{checkpoint.rstrip('/')}/sources/0"
    text = _read_text(f"{folder}/{offset}")
    if text is None:
        text = _first_compaction_from(folder, offset)
        if text is None:
            return None
    lines = text.splitlines()
    if not lines or lines[0] != _VERSION:
        return None
    entries = [json.loads(line) for line in lines[1:] if line]
    return [e["path"] for e in entries if int(e["batchId"]) == offset]


def _first_compaction_from(folder: str, offset: int) -> str | None:
    """The text of the first ``<n>.compact`` file with n >= ``offset`` (it holds every entry up to n)."""
    fs, inner = filesystem_for(folder)
    names = [info.base_name for info in fs.get_file_info(pafs.FileSelector(inner))]
    compacted = sorted(int(name.split(".")[0]) for name in names if name.endswith(".compact")
                       and name.split(".")[0].isdigit())
    for n in compacted:
        if n >= offset:
            return _read_text(f"{folder}/{n}.compact")
    return None


def _lines(uri: str, max_bytes: int) -> list[str] | None:
    r"""The lines of one raw file as Spark's text source splits them; None where it might differ.

    Spark splits on ``\n``, ``\r\n`` and ``\r``; a file holding ``\r`` is left to it,
    and so is one that is not UTF-8 or starts with a byte-order mark, and one larger than
    ``max_bytes`` on disk (a batch that big is Spark's anyway; it is not read into memory here).
    """
    fs, inner = filesystem_for(local_path(uri))
    if fs.get_file_info(inner).size > max_bytes:
        return None
    with fs.open_input_stream(inner, compression=None) as stream:
        data = stream.read()
    if uri.endswith(".gz"):
        data = gzip.decompress(data)
    if b"\r" in data or data.startswith(b"\xef\xbb\xbf"):  # Hadoop's reader drops a leading byte-order mark
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return lines


def local_path(uri: str) -> str:
    """A file URI (source log, or ``_metadata.file_path``) as a path ``filesystem_for`` opens.

    ``file:`` URIs lose their scheme and are percent-decoded; other URIs stay as they are.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    return uri


def _as_file_path(uri: str) -> str:
    """A source-log URI as Spark's ``_metadata.file_path`` spells it (``file:///x`` is ``file:/x``)."""
    return "file:/" + uri[len("file:///"):] if uri.startswith("file:///") else uri
