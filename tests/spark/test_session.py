"""The session the builder starts runs with the options it was given."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.spark


def test_batch_session_runs_the_parallel_collector(spark):
    # the suite's session is a batch session (spark.gc=auto): its JVM must really run the parallel collector
    jvm = spark.sparkContext._jvm
    names = {bean.getName() for bean in jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()}
    assert names == {"PS Scavenge", "PS MarkSweep"}, names
    assert spark.sparkContext.getConf().get("spark.driver.extraJavaOptions").endswith("-XX:+UseParallelGC")


def test_session_jit_compiles_huge_methods(spark):
    # the folds' generated aggregation code is over HotSpot's 8,000-byte limit for the JIT
    jvm = spark.sparkContext._jvm
    bean_class = jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean")
    bean = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(bean_class)
    assert bean.getVMOption("DontCompileHugeMethods").getValue() == "false"
