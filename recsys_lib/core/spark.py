"""The one SparkSession builder for the whole suite."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

from pyspark.sql import SparkSession

from recsys_lib.core.config import SparkConfig

#: Settings every session gets unless the config overrides them.
_BASE_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    # Delta wants INT64 microsecond timestamps, not Spark's legacy INT96.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.parquet.compression.codec": "snappy",
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}

#: Under a ``local`` master, reads list up to this many paths on the driver instead of in a Spark job.
LOCAL_LISTING_THRESHOLD = 100_000

#: JVM flag per ``spark.gc`` choice: throughput (parallel) or short pauses (G1).
_GC_FLAGS = {"parallel": "-XX:+UseParallelGC", "g1": "-XX:+UseG1GC"}

#: The JVMs' log4j2 configuration: Spark's defaults without messages an operator cannot act on.
LOG4J2_CONFIG = Path(__file__).with_name("log4j2.properties")

#: JVM flag that Spark 4.2 workers add for Java 23+, which Java 17 refuses.
_NEW_JVM_FLAG = "--sun-misc-unsafe-memory-access=allow"


def build_spark(cfg: SparkConfig, *, streaming: bool = False) -> SparkSession:
    """Build (or return the running) SparkSession for ``cfg``.

    Local defaults: ``SPARK_LOCAL_IP=127.0.0.1``, UTC everywhere, shuffle
    partitions sized to the cores, and the JVM options of :func:`java_options`
    (``streaming`` says the session serves the latency-bound stream). Anything in
    ``cfg.conf`` wins.
    """
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Executors (local-cluster, standalone) must run the same interpreter.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

    master = resolve_master(cfg)
    conf = dict(_BASE_CONF)
    conf["spark.driver.extraJavaOptions"] = conf["spark.executor.extraJavaOptions"] = java_options(cfg, streaming)
    conf["spark.driver.memory"] = cfg.driver_memory
    conf["spark.ui.enabled"] = str(cfg.ui_enabled).lower()
    conf["spark.sql.shuffle.partitions"] = str(shuffle_partitions(cfg))
    effective = master or _submitted_master()
    if re.fullmatch(r"local(\[.*\])?", effective):
        # one JVM: a distributed listing job would only add a Spark job's overhead to every
        # read of more than 32 files (measured 1.3 s against 2.7-3.1 s to open 124 files here)
        conf["spark.sql.sources.parallelPartitionDiscovery.threshold"] = str(LOCAL_LISTING_THRESHOLD)
    if effective.startswith("local-cluster"):
        shim = java_flag_shim()
        if shim:
            conf["spark.executorEnv.JAVA_HOME"] = shim
    conf.update(cfg.conf)

    builder = SparkSession.builder.appName(cfg.app_name)
    if master:
        builder = builder.master(master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    return spark


def java_options(cfg: SparkConfig, streaming: bool = False) -> str:
    """The driver's and executors' JVM options: UTC, JIT settings, and the collector ``cfg.gc`` names.

    HotSpot leaves methods over 8,000 bytes of bytecode to the interpreter; the generated code
    of a wide aggregation (the feature folds: fifteen decayed sums and more per row) exceeds
    that, and ``-XX:-DontCompileHugeMethods`` lets the JIT compile it (measured: 10% less JVM
    CPU time for a 10M-event full refresh here). In a cold batch JVM, the JIT compilers used
    about 55 s of CPU over a 75 s full refresh on two cores; batch jobs therefore compile only
    code four times as hot as the default (``-XX:CompileThresholdScaling=4``: 7% less JVM CPU
    time in three back-to-back pairs). The stream keeps the default, for a short warm-up.
    ``auto`` picks the parallel collector for batch jobs (measured 9% faster for a 10M-event
    ingest here) and G1 for the stream, whose freshness a long full collection would hurt.
    Only JVMs this builder launches get them: under spark-submit, pass them to spark-submit.
    Logging comes from :data:`LOG4J2_CONFIG` (Spark's defaults without the noise).
    """
    gc = cfg.gc if cfg.gc != "auto" else ("g1" if streaming else "parallel")
    jit = "-XX:-DontCompileHugeMethods" + ("" if streaming else " -XX:CompileThresholdScaling=4")
    logs = f" -Dlog4j2.configurationFile={LOG4J2_CONFIG.as_uri()}" if LOG4J2_CONFIG.is_file() else ""
    return f"-Duser.timezone=UTC {jit} {_GC_FLAGS[gc]}{logs}"


def under_spark_submit() -> bool:
    """True when this Python process was started by spark-submit."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def _submitted_master() -> str:
    """The ``--master`` spark-submit was given ('' when not under spark-submit)."""
    if not under_spark_submit():
        return ""
    from pyspark import SparkConf

    return SparkConf().get("spark.master", "") or ""


def resolve_master(cfg: SparkConfig) -> str | None:
    """The master to set: the configured one, none under spark-submit, else ``local[*]``."""
    if cfg.master:
        return cfg.master
    return None if under_spark_submit() else "local[*]"


def shuffle_partitions(cfg: SparkConfig) -> int:
    """Shuffle partitions: the configured number, or twice the cores on ``auto``."""
    if cfg.shuffle_partitions != "auto":
        return int(cfg.shuffle_partitions)
    return 2 * master_cores(resolve_master(cfg) or "local[*]")


def master_cores(master: str) -> int:
    """Cores a master string gives, e.g. ``local[2]`` -> 2, ``local-cluster[2,1,1024]`` -> 2."""
    cpus = os.cpu_count() or 2
    match = re.fullmatch(r"local\[(\d+|\*)(?:,\d+)?\]", master)
    if match:
        return cpus if match.group(1) == "*" else int(match.group(1))
    match = re.fullmatch(r"local-cluster\[(\d+),\s*(\d+),\s*\d+\]", master)
    if match:
        return int(match.group(1)) * int(match.group(2))
    return 1 if master == "local" else cpus


@lru_cache(maxsize=1)
def java_flag_shim() -> str | None:
    """A JAVA_HOME whose ``bin/java`` drops flags this JVM rejects, or None if not needed.

    Spark 4.2 workers (local-cluster, standalone) start executors with a flag
    that only Java 23+ knows; Java 17 then refuses to start. The shim removes
    it and runs the real ``java``.
    """
    real_java = _real_java()
    if real_java is None or _java_major(real_java) >= 23:
        return None
    home = Path(tempfile.gettempdir()) / f"recsys-jvm-shim-{os.getuid()}"
    script = home / "bin" / "java"
    script.parent.mkdir(parents=True, exist_ok=True)
    body = (
        "#!/bin/sh\n"
        "# Written by recsys_lib.core.spark: drop a Java 23+ flag, then run the real java.\n"
        'for a in "$@"; do\n'
        "  shift\n"
        f'  [ "$a" = "{_NEW_JVM_FLAG}" ] || set -- "$@" "$a"\n'
        "done\n"
        f'exec "{real_java}" "$@"\n'
    )
    tmp = script.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(body)
    tmp.chmod(0o755)
    tmp.replace(script)
    return str(home)


def _real_java() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    return str(Path(found).resolve()) if found else None


def _java_major(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major
