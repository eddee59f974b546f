"""Progress of long steps, for people at a terminal and for logs alike.

* :class:`Progress` counts one step (files, epochs, rows): a tqdm bar when the stream is a
  terminal, otherwise one plain line every ``every`` seconds (what Airflow's task log keeps),
  each with the rate and an ETA when the total is known.
* :class:`SparkProgress` watches a SparkSession's status tracker from a daemon thread and
  reports each running stage's finished tasks the same way, so a long Spark job is never silent.

Both write to stderr, so stdout stays the command's result (safe to pipe).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import TracebackType
from typing import Any, TextIO

log = logging.getLogger(__name__)


class Progress:
    """One long step's progress (see the module docstring); use as a context manager."""

    def __init__(self, what: str, total: int | None = None, *, unit: str = "", every: float = 10.0,
                 stream: TextIO | None = None, enabled: bool = True) -> None:
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.done = 0
        self.started = self.last = time.monotonic()
        self._bar: Any = None
        if enabled and _is_tty(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=what, unit=f" {unit}" if unit else "it", file=self.stream,
                             leave=False, dynamic_ncols=True)

    def update(self, n: int = 1, note: str = "") -> None:
        """Count ``n`` more; ``note`` (e.g. the current loss) goes on the line."""
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            return
        now = time.monotonic()
        if now - self.last >= self.every or (self.total is not None and self.done >= self.total):
            self.last = now
            print(self.line(now, note), file=self.stream, flush=True)

    def line(self, now: float | None = None, note: str = "") -> str:
        """The plain progress line: counts, share, rate, elapsed and ETA."""
        elapsed = (now or time.monotonic()) - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        unit = f" {self.unit}" if self.unit else ""
        head = f"{self.what}: {self.done:,}" + (f"/{self.total:,}{unit} ({self.done / self.total:.0%})"
                                                if self.total else unit)
        eta = (f", ETA {_seconds((self.total - self.done) / rate)}" if self.total and rate > 0
               and self.done < self.total else "")
        return f"{head}, {rate:,.1f}{unit}/s, {_seconds(elapsed)} elapsed{eta}" + (f"; {note}" if note else "")

    def close(self) -> None:
        """Remove the bar (its final state is the caller's summary line)."""
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class SparkProgress:
    """Report a SparkSession's running stages every ``every`` seconds from a daemon thread."""

    def __init__(self, spark: Any, *, every: float = 10.0, stream: TextIO | None = None) -> None:
        self.spark, self.every = spark, every
        self.stream = stream or sys.stderr
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spark-progress", daemon=True)

    def start(self) -> SparkProgress:
        """Start watching."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (returns at once; the thread ends within one interval)."""
        self._stop.set()

    def lines(self) -> list[str]:
        """One line per active stage: its name, finished and running tasks out of all."""
        tracker = self.spark.sparkContext.statusTracker()
        out = []
        for stage_id in sorted(tracker.getActiveStageIds()):
            info = tracker.getStageInfo(stage_id)
            if info is None:
                continue
            out.append(f"spark stage {stage_id} ({info.name.split(' at ')[0]}): {info.numCompletedTasks}/"
                       f"{info.numTasks} tasks done, {info.numActiveTasks} running")
        return out

    def _run(self) -> None:
        from py4j.protocol import Py4JError

        while not self._stop.wait(self.every):
            try:
                lines = self.lines()
            except (Py4JError, AttributeError, RuntimeError, ValueError) as exc:  # the session is stopping
                log.debug("spark progress reports end: %s", exc)
                return
            for line in lines:
                print(line, file=self.stream, flush=True)


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _seconds(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.1f}h"
    if value >= 60:
        return f"{value / 60:.1f}m"
    return f"{value:.0f}s"
