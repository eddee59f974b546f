"""The training-set job: point-in-time-correct rows for labelled events.

The table ``training_examples`` is replaced on every build; its commit metadata
records the ``events`` version read, the label types and the day range.
"""

from __future__ import annotations

import time
from datetime import date, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from recsys_lib.core.config import RecsysConfig
from recsys_lib.core.schema import EVENT_TYPES, EVENTS_TABLE
from recsys_lib.features.point_in_time import training_rows
from recsys_lib.lake import Lake, TableSpec
from recsys_lib.models.holdout import holdout_cutoff

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
    events = lake.read(EVENTS_TABLE, version=events_version)
    window = feature_window(events, cfg)
    rows = training_rows(events, label_types, cfg.features, first_day=first_day, last_day=last_day,
                         feature_time="window" if window else cfg.train.feature_time, window=window)
    meta = {"job": "training_set", "events_version": events_version, "label_types": label_types,
            "feature_time": cfg.train.feature_time,
            "feature_window_anchor": window[0].isoformat() if window else None,
            "from": str(first_day) if first_day else None, "to": str(last_day) if last_day else None}
    result = lake.overwrite(TableSpec(TRAINING_TABLE, rows.schema, ("label_date",)), rows, metadata=meta)
    return {**meta, "table": TRAINING_TABLE, "version": result.version, "rows": result.rows,
            "seconds": round(time.monotonic() - started, 2)}


def feature_window(events: DataFrame, cfg: RecsysConfig) -> tuple[datetime, float] | None:
    """``(holdout cutoff, holdout seconds)`` when ``train.feature_time`` is ``holdout_window``, else None.

    Training rows then see their labels from the same distance as the holdout's: its
    features are taken at the cutoff and its labels fall in the ``holdout_days`` after it.
    """
    if cfg.train.feature_time != "holdout_window":
        return None
    tc = cfg.train
    return holdout_cutoff(events, list(tc.label_types), tc.holdout_days), tc.holdout_days * 86_400.0
