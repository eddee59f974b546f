"""The JVM options the one SparkSession builder passes (no Spark started here)."""

from __future__ import annotations

import pytest

from recsys_lib.core.config import ConfigError, SparkConfig, load_config
from recsys_lib.core.spark import LOG4J2_CONFIG, java_options

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
    logs = f"-Dlog4j2.configurationFile={LOG4J2_CONFIG.as_uri()}"  # the quiet logging, a file in the package
    assert options == ["-Duser.timezone=UTC", "-XX:-DontCompileHugeMethods", *batch_jit, flag, logs]
    assert LOG4J2_CONFIG.is_file()


def test_unknown_collector_names_the_key():
    with pytest.raises(ConfigError, match=r"spark\.gc"):
        load_config(overrides=["spark.gc=zgc"])
