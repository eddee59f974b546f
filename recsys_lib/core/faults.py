"""Named crash points for fault-tolerance tests.

``RECSYS_FAULT_POINT=name`` (or ``name@k`` for the k-th time it is reached)
makes the process SIGKILL itself at that point, precisely where a crash hurts
most: between a Delta commit and the next one, or before Spark's checkpoint
commit. Unset (always, in production), a fault point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_hits: Counter[str] = Counter()


def fault_point(name: str) -> None:
    """SIGKILL this process if ``RECSYS_FAULT_POINT`` names this point (and hit count)."""
    wanted = os.environ.get("RECSYS_FAULT_POINT")
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
