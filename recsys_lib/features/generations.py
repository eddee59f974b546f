"""Feature generations: which versions of the feature tables describe one consistent full refresh.

A full refresh overwrites the three feature tables one after another (Delta has no
transaction across tables). Killed in between, it would leave one table recomputed
from new events and the others not. So each refresh tags its overwrites with a
``refresh_id`` and, only after the last one, appends a row to ``feature_generations``
(the manifest): the refresh id, the ``events`` version it read, and each table's version.

Batch readers (:func:`~recsys_lib.features.layers.read_states`, so ``load_features``,
training and batch recommendations; the online store's full load) ask
:func:`pinned_versions`: while some table's newest refresh is not in the manifest
(a refresh died, or is between its commits right now), every table is read at the
newest complete generation's versions, so a reader never mixes two refreshes. The
pin lifts when a refresh completes (re-run it: it is idempotent).

The stream keeps folding new events meanwhile (its commits are fenced per table by
their own ``events_version``), and its online projection keeps serving them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import types as T

from recsys_lib.lake import Lake, TableSpec
from recsys_lib.lake.files import spark_to_arrow

log = logging.getLogger(__name__)
GENERATIONS_TABLE = "feature_generations"
GENERATIONS_SCHEMA = T.StructType([
    T.StructField("refresh_id", T.StringType(), False),
    T.StructField("events_version", T.LongType(), False),
    T.StructField("until", T.StringType(), True),
    T.StructField("versions", T.StringType(), False),  # JSON {table: version}
    T.StructField("committed_at", T.TimestampType(), False),
])
GENERATIONS_SPEC = TableSpec(GENERATIONS_TABLE, GENERATIONS_SCHEMA, ())


def record_generation(lake: Lake, refresh_id: str, versions: Mapping[str, int], events_version: int,
                      until: str | None) -> int:
    """Append the completed refresh to the manifest (its last commit); returns the manifest's version."""
    row = pa.table({"refresh_id": [refresh_id], "events_version": [events_version], "until": [until],
                    "versions": [json.dumps(dict(versions), sort_keys=True)],
                    "committed_at": [datetime.now(UTC)]}).cast(spark_to_arrow(GENERATIONS_SCHEMA))
    return lake.append_arrow(GENERATIONS_SPEC, row).version


def _generations(lake: Lake) -> list[dict[str, object]]:
    if not lake.exists(GENERATIONS_TABLE):
        return []
    rows = lake.read_arrow(GENERATIONS_TABLE)
    rows = rows.take(pc.sort_indices(rows, [("committed_at", "ascending")]))
    return rows.to_pylist()


def pinned_versions(lake: Lake, tables: Sequence[str]) -> dict[str, int] | None:
    """The versions to read ``tables`` at, or None to read each at its latest (see the module docstring)."""
    newest = {t: lake.job_metadata(t, "refresh_id") for t in tables if lake.exists(t)}
    done = _generations(lake)
    complete = {str(g["refresh_id"]) for g in done}
    unfinished = sorted(t for t, rid in newest.items() if rid is not None and rid not in complete)
    if not unfinished:
        return None
    if not done:
        log.warning("feature tables %s hold a refresh that did not complete, and no refresh ever did: "
                    "reading their latest versions (run `recsys features refresh`)", unfinished)
        return None
    versions = {str(k): int(v) for k, v in json.loads(str(done[-1]["versions"])).items()}
    log.warning("feature tables %s hold a refresh that did not complete: reading every feature table at the "
                "last complete refresh (%s: %s); re-run `recsys features refresh`", unfinished,
                done[-1]["refresh_id"], versions)
    return versions
