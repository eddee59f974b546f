"""The ingest job: raw landing folder -> ``events`` + ``events_quarantine`` (+ ``quarantined_files``).

The validation, deduplication and commit live in :mod:`recsys_lib.ingest.commit`
(shared with the stream); this job checks the folder and its files
(:mod:`recsys_lib.ingest.corrupt`: a corrupt file is quarantined whole), reads it and reports.

Concurrency: the run holds the writer leases of the tables it writes
(:data:`~recsys_lib.ingest.corrupt.INGEST_TABLES`), so a second ingest, or the stream,
waits for it (up to ``lake.lease_wait``, then exits naming the holder). A re-run after
a crash is safe: what was committed is recognised as duplicates.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from recsys_lib.core.config import RecsysConfig
from recsys_lib.core.faults import fault_point
from recsys_lib.ingest.commit import IngestError, IngestSummary, ingest_frame
from recsys_lib.ingest.corrupt import INGEST_TABLES, find_corrupt, list_raw_files, quarantine_files
from recsys_lib.ingest.validate import RAW_FILE_GLOB, RAW_SUFFIXES, read_raw, read_raw_files
from recsys_lib.lake import Lake

__all__ = ["IngestError", "IngestSummary", "format_summary", "run_ingest", "write_json"]


def run_ingest(spark: SparkSession, lake: Lake, cfg: RecsysConfig, input_dir: str | None = None,
               *, summary_json: str | None = None, now: datetime | None = None) -> IngestSummary:
    """Ingest every raw file below ``input_dir`` (default: the configured landing folder).

    Raises:
        IngestError: If the folder is missing or the counts do not reconcile.

    """
    source = input_dir or cfg.landing_dir
    _check_input(source)
    now = now or datetime.now(UTC)
    run_id = f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    with lake.writing(INGEST_TABLES, f"ingest {run_id} of {source}"):
        files = list_raw_files(source, RAW_SUFFIXES)
        corrupt = find_corrupt(files)
        if corrupt:  # read every other file by name; record the corrupt ones whole
            quarantine_files(lake, corrupt, run_id=run_id, now=now)
            fault_point("after_corrupt_files_commit")
            bad = {c.path for c in corrupt}
            raw = read_raw_files(spark, [f for f in files if f not in bad])
        else:
            raw = read_raw(spark, source)
        summary = ingest_frame(spark, lake, cfg, raw, run_id=run_id, source=source, now=now)
    summary.quarantined_files = sorted(c.path for c in corrupt)
    if summary_json:
        write_json(summary_json, summary.to_json())
    return summary


def _check_input(source: str) -> None:
    if "://" in source or source.startswith("file:"):
        return
    path = Path(source)
    if not path.is_dir():
        raise IngestError(f"input folder {source} does not exist (or is not a folder)")
    if not any(p.is_file() for p in path.rglob("*") if not p.name.startswith((".", "_"))):
        raise IngestError(f"input folder {source} holds no raw files (expected {RAW_FILE_GLOB})")


def write_json(path: str, payload: Mapping[str, Any]) -> None:
    """Write JSON atomically (temp file, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(target)


def format_summary(summary: IngestSummary) -> str:
    """A human-readable reconciliation table."""
    lines = [
        f"ingest run {summary.run_id} from {summary.input_dir}",
        f"  input records  {summary.input_records:>12,}",
        f"  valid (new)    {summary.valid:>12,}",
        f"  quarantined    {summary.quarantined:>12,}",
        f"  duplicates     {summary.duplicates:>12,}",
        *([f"  forgotten      {summary.forgotten:>12,}  (people forgotten: dropped, not stored)"]
          if summary.forgotten else []),
        f"  balanced       {'yes' if summary.balanced else 'NO'}",
    ]
    lines += [f"    duplicate: {kind:<28} {n:>10,}" for kind, n in summary.duplicates_by_kind.items() if n]
    lines += [f"    quarantine: {why:<27} {n:>10,}" for why, n in summary.quarantined_by_reason.items()]
    lines += [f"  quarantined file (corrupt_file, no line read): {path}" for path in summary.quarantined_files]
    lines.append(f"  events table version {summary.events_version}, quarantine version "
                 f"{summary.quarantine_version}, {summary.seconds:.1f}s")
    return "\n".join(lines)
