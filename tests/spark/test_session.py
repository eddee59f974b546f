"""The session the builder starts runs with the options it was given."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.spark


def test_batch_session_runs_the_parallel_collector(spark):
    # the suite's session is a batch session (spark.gc=auto): its JVM must really run the parallel collector
    jvm = spark.sparkContext._jvm
    names = {bean.getName() for bean in jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()}
    assert names == {"PS Scavenge", "PS MarkSweep"}, names
    options = spark.sparkContext.getConf().get("spark.driver.extraJavaOptions").split()
    assert "-XX:+UseParallelGC" in options and "-XX:+UseG1GC" not in options, options


def test_session_jit_compiles_huge_methods(spark):
    # the folds' generated aggregation code is over HotSpot's 8,000-byte limit for the JIT
    jvm = spark.sparkContext._jvm
    bean_class = jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean")
    bean = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(bean_class)
    assert bean.getVMOption("DontCompileHugeMethods").getValue() == "false"


def test_local_session_lists_files_on_the_driver(spark, tmp_path):
    # under a local master a distributed listing job is pure overhead: reading 40 files (over Spark's
    # default threshold of 32) must not start any job
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = []
    for n in range(40):
        paths.append(str(tmp_path / f"part-{n}.parquet"))
        pq.write_table(pa.table({"x": [n]}), paths[-1])
    sc = spark.sparkContext
    sc.setJobGroup("listing-test", "read of 40 files")
    try:
        df = spark.read.schema("x long").parquet(*paths)
        assert list(sc.statusTracker().getJobIdsForGroup("listing-test")) == []
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    assert sorted(r.x for r in df.collect()) == list(range(40))


def test_spark_progress_reports_the_running_stage(spark):
    import threading
    import time

    from recsys_lib.core.progress import SparkProgress

    def slow(rows):
        time.sleep(3)
        return rows

    job = threading.Thread(target=lambda: spark.sparkContext.parallelize(range(4), 2).mapPartitions(slow).count())
    job.start()
    watcher, lines = SparkProgress(spark), []
    deadline = time.monotonic() + 60
    while not lines and time.monotonic() < deadline:
        lines = watcher.lines()
        time.sleep(0.05)
    job.join()
    assert lines and "/2 tasks done" in lines[0], lines
