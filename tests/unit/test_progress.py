"""Progress lines for logs: counts, share, rate and ETA, at most one line per interval."""

from __future__ import annotations

import io

import pytest

from recsys_lib.core.progress import Progress

pytestmark = pytest.mark.unit


def test_plain_lines_count_the_step_and_estimate_what_is_left():
    out = io.StringIO()  # not a terminal: plain lines, the kind an Airflow task log keeps
    progress = Progress("ingest", 40, unit="files", every=0.0, stream=out)
    progress.started -= 10.0  # as if 10 s had passed when the first 10 files were done
    progress.update(10, note="1.2M rows")
    line = out.getvalue().strip()
    assert line.startswith("ingest: 10/40 files (25%), 1.0 files/s, 10s elapsed, ETA 30s; 1.2M rows"), line


def test_lines_wait_for_the_interval_except_the_last():
    out = io.StringIO()
    progress = Progress("load", 3, unit="rows", every=3600.0, stream=out)
    progress.update(1)
    progress.update(1)
    assert out.getvalue() == ""  # within the interval: quiet
    progress.update(1)
    assert out.getvalue().startswith("load: 3/3 rows (100%)") and "ETA" not in out.getvalue()


def test_disabled_progress_still_counts_but_prints_nothing():
    out = io.StringIO()
    progress = Progress("x", None, every=0.0, stream=out, enabled=False)
    progress.update(5)
    assert progress.done == 5 and out.getvalue() == ""
