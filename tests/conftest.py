"""Shared fixtures: one session-scoped SparkSession, per-test config and lake."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
# py4j logs "Closing down clientserver connection" at INFO from __del__ at interpreter exit, after pytest
# has closed its captured streams: a "Logging error ... I/O operation on closed file" traceback otherwise
logging.getLogger("py4j").setLevel(logging.WARNING)

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """The one SparkSession for the whole test run (local[2], two shuffle partitions)."""
    from recsys_lib.core.config import SparkConfig
    from recsys_lib.core.spark import build_spark

    session = build_spark(SparkConfig(master="local[2]", shuffle_partitions=2, driver_memory="2g",
                                      log_level="ERROR"))
    yield session
    session.stop()


@pytest.fixture
def cfg(tmp_path: Path):
    """Config rooted at a fresh temporary data folder."""
    from recsys_lib.core.config import load_config

    # Pseudonyms off: expectations are written by hand with raw ids (u1, i2). tests/spark/test_privacy.py
    # and the CLI-driven tests (faults, integration, demo) run with the default, pseudonyms on.
    # dq.log_to_mlflow off: an MLflow store per test home would cost seconds each (tests/spark/test_quality_gate.py
    # turns it on where it checks it)
    return load_config(overrides=[f"home={tmp_path / 'home'}", "spark.master=local[2]",
                                  "lake.retry_backoff=1ms", "privacy.pseudonymize=false", "dq.log_to_mlflow=false"])


@pytest.fixture
def shared_id_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """One pseudonym key for every home a test makes (child processes inherit it).

    Without it each data folder makes its own key file, so two homes fed the same raw
    events store different pseudonyms, as they should in production.
    """
    from recsys_lib.core.privacy import KEY_ENV

    key = "test-key-shared-by-every-home-of-one-test-0123456789"
    monkeypatch.setenv(KEY_ENV, key)
    return key


@pytest.fixture
def lake(spark, cfg):
    """A delta-rs lake in a fresh folder."""
    from recsys_lib.lake import open_lake

    return open_lake(spark, cfg, engine="delta-rs")


def shared_dataset(*parts: str) -> Path:
    """Path below ../shared/datasets, or skip the test saying why."""
    path = SHARED_DATASETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared dataset {path} is absent (tests that read real data need ../shared/datasets)")
    return path
