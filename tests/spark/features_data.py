"""Tiny inline events for feature tests."""

from __future__ import annotations

from datetime import datetime, timedelta

from recsys_lib.core.schema import EVENTS_SCHEMA

T0 = datetime(2024, 1, 1)


def event(eid, user, etype, ts, item=None, category=None, price=None, quantity=None):
    when = T0 + ts if isinstance(ts, timedelta) else ts
    return (eid, when, user, etype, item, category, price, quantity, None, None, "f", "run", T0, when.date())


def events_df(spark, rows):
    return spark.createDataFrame(rows, EVENTS_SCHEMA)


