"""Forgetting people in a landing folder: raw JSON-lines files lose the lines of forgotten users.

``recsys forget`` runs this over ``ingest.landing_dir`` (default ``<home>/landing``), the
folder this suite owns. A line belongs to a user when its ``user_id`` member (a string or a
number, found by :data:`~recsys_lib.core.privacy.USER_ID_IN_RAW`, as the quarantine masks
it) equals their raw id; a line too broken to parse as JSON still matches. A rewritten file
is written under a hidden name (which the ingest never lists), keeps its compression and
modification time, and is renamed over the old one. Files already ingested are not read
again: the stream tracks files by path, and the batch ingest drops events it already holds.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import zlib
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from recsys_lib.core.privacy import USER_ID_IN_RAW
from recsys_lib.ingest.validate import RAW_SUFFIXES

log = logging.getLogger(__name__)
_USER = re.compile(USER_ID_IN_RAW)


@dataclass
class LandingScrub:
    """What a scrub of a landing folder did."""

    files_rewritten: int = 0
    lines_removed: int = 0
    unreadable: list[str] = field(default_factory=list)


def user_of_line(line: str) -> str | None:
    """The ``user_id`` of a raw line as the ingest reads it (numbers as their text), or None."""
    found = _USER.search(line)
    if found is None:
        return None
    value = found.group(2)
    if not value.startswith('"'):
        return None if value == "null" else value
    try:
        return str(json.loads(value))
    except json.JSONDecodeError:
        return value[1:-1]


def scrub_landing(folder: Path, users: Collection[str]) -> LandingScrub:
    """Remove the lines of ``users`` (raw ids) from every raw file below ``folder``."""
    done = LandingScrub()
    if not folder.is_dir() or not users:
        return done
    wanted = set(users)
    for path in sorted(p for p in folder.rglob("*") if _is_raw(p)):
        try:
            data = path.read_bytes()
            text = (gzip.decompress(data) if path.name.endswith(".gz") else data).decode("utf-8")
        except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:  # a corrupt file, quarantined whole
            log.warning("forget: %s cannot be read (%s); it is not scrubbed", path, exc)
            done.unreadable.append(str(path))
            continue
        if "\\u" not in text and not any(u in text for u in wanted):
            continue
        lines = text.splitlines(keepends=True)
        kept = [line for line in lines if user_of_line(line) not in wanted]
        if len(kept) == len(lines):
            continue
        _rewrite(path, "".join(kept).encode("utf-8"))
        done.files_rewritten += 1
        done.lines_removed += len(lines) - len(kept)
    return done


def _is_raw(path: Path) -> bool:
    return path.is_file() and not path.name.startswith((".", "_")) and path.name.endswith(RAW_SUFFIXES)


def _rewrite(path: Path, body: bytes) -> None:
    stat = path.stat()
    tmp = path.with_name(f".{path.name}.forget")
    tmp.write_bytes(gzip.compress(body, mtime=0) if path.name.endswith(".gz") else body)
    os.utime(tmp, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(tmp, path)
