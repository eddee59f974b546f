"""The JVM options the one SparkSession builder passes (no Spark started here)."""

from __future__ import annotations

import pytest

from recsys_lib.core.config import ConfigError, SparkConfig, load_config
from recsys_lib.core.spark import java_options

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("gc", "streaming", "flag"), [
    ("auto", False, "-XX:+UseParallelGC"),
    ("auto", True, "-XX:+UseG1GC"),
    ("parallel", True, "-XX:+UseParallelGC"),
    ("g1", False, "-XX:+UseG1GC"),
])
def test_collector_follows_config_and_workload(gc, streaming, flag):
    options = java_options(SparkConfig(gc=gc), streaming).split()
    batch_jit = [] if streaming else ["-XX:CompileThresholdScaling=4"]  # the stream warms up at the default
    assert options == ["-Duser.timezone=UTC", "-XX:-DontCompileHugeMethods", *batch_jit, flag]


def test_unknown_collector_names_the_key():
    with pytest.raises(ConfigError, match=r"spark\.gc"):
        load_config(overrides=["spark.gc=zgc"])
