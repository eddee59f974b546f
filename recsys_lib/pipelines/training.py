"""The training-set job: point-in-time-correct rows for labelled events.

The table ``training_examples`` is replaced on every build; its commit metadata
records the ``events`` version read, the label types and the day range.
"""

from __future__ import annotations

import time
from datetime import date
from typing import Any

from pyspark.sql import SparkSession

from recsys_lib.core.config import RecsysConfig
from recsys_lib.core.schema import EVENT_TYPES, EVENTS_TABLE
from recsys_lib.features.point_in_time import training_rows
from recsys_lib.lake import Lake, TableSpec

TRAINING_TABLE = "training_examples"


def run_training_set(spark: SparkSession, lake: Lake, cfg: RecsysConfig, label_types: list[str],
                     first_day: date | None = None, last_day: date | None = None) -> dict[str, Any]:
    """Build ``training_examples`` for labels of ``label_types`` on days ``first_day``..``last_day`` (inclusive).

    Raises:
        ValueError: On an unknown label type, an empty list, or a reversed day range.

    """
    unknown = sorted(set(label_types) - set(EVENT_TYPES))
    if unknown or not label_types:
        raise ValueError(f"--label-types: unknown event type(s) {unknown}; expected some of {list(EVENT_TYPES)}")
    if first_day and last_day and first_day > last_day:
        raise ValueError(f"--from {first_day} is after --to {last_day}")
    if not lake.exists(EVENTS_TABLE):
        raise ValueError(f"no '{EVENTS_TABLE}' table at {lake.uri(EVENTS_TABLE)}: run `recsys ingest` first")
    started = time.monotonic()
    events_version = lake.version(EVENTS_TABLE)
    rows = training_rows(lake.read(EVENTS_TABLE, version=events_version), label_types, cfg.features,
                         first_day=first_day, last_day=last_day, feature_time=cfg.train.feature_time)
    meta = {"job": "training_set", "events_version": events_version, "label_types": label_types,
            "feature_time": cfg.train.feature_time,
            "from": str(first_day) if first_day else None, "to": str(last_day) if last_day else None}
    result = lake.overwrite(TableSpec(TRAINING_TABLE, rows.schema, ("label_date",)), rows, metadata=meta)
    return {**meta, "table": TRAINING_TABLE, "version": result.version, "rows": result.rows,
            "seconds": round(time.monotonic() - started, 2)}
