"""Shared by the fault scenarios: run the real CLI in its own process, and compare with a recomputation."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from recsys_lib.core.config import RecsysConfig, load_config
from recsys_lib.features import entities
from recsys_lib.ingest.commit import EVENTS_SPEC
from recsys_lib.lake import Lake, open_lake
from recsys_lib.pipelines.features import run_refresh
from recsys_lib.pipelines.ingest import run_ingest
from tests.spark.helpers import assert_same_state, by_key, stored_states

RECSYS = str(Path(sys.executable).with_name("recsys"))
#: Every CLI call of a scenario runs on this home with a small Spark.
# dq.log_to_mlflow off: these tests check data under faults; the refresh's MLflow record (seconds per
# refresh) is checked in tests/spark/test_quality_gate.py. The gate itself stays on, as by default.
SMALL_SPARK = ("--set", "spark.master=local[2]", "--set", "spark.driver_memory=1g", "--set", "dq.log_to_mlflow=false")


def env(fault: str | None = None) -> dict[str, str]:
    """The environment of a CLI process, with ``RECSYS_FAULT_POINT`` set only when given."""
    out = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    out.pop("RECSYS_FAULT_POINT", None)
    if fault:
        out["RECSYS_FAULT_POINT"] = fault
    return out


def recsys(home: Path, *args: str, fault: str | None = None,
           extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``recsys <args>`` on ``home`` to the end (or to its SIGKILL at ``fault``)."""
    return subprocess.run([RECSYS, *args, "--set", f"home={home}", *SMALL_SPARK, *extra], env=env(fault),
                          capture_output=True, text=True, timeout=600, check=False)


def start(home: Path, *args: str, log: Path, fault: str | None = None,
          extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start ``recsys <args>`` on ``home`` in its own process group, output to ``log``."""
    with log.open("w") as fh:
        return subprocess.Popen([RECSYS, *args, "--set", f"home={home}", *SMALL_SPARK, *extra], env=env(fault),
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def stream_batches(home: Path) -> list[dict]:
    """The stream's recorded micro-batches on ``home`` (its status file), oldest first."""
    from recsys_lib.streaming.job import last_batches

    return last_batches(load_config(overrides=[f"home={home}"]), limit=1000)


def wait_for(what: str, check, log: Path, seconds: float = 300) -> None:
    """Poll ``check`` until true; past ``seconds`` fail, showing the end of ``log``."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


def ok(proc: subprocess.CompletedProcess) -> str:
    """The output of a run that must have succeeded."""
    assert proc.returncode == 0, (proc.stdout or "")[-2000:] + (proc.stderr or "")[-3000:]
    return proc.stdout


def generate(out: Path, *, events: int, seed: int, days: int = 2) -> Path:
    """A small synthetic landing folder (with dirt: bad lines, duplicates, late events)."""
    subprocess.run([RECSYS, "generate", "--out", str(out), "--events", str(events), "--users", "60", "--items",
                    "40", "--days", str(days), "--seed", str(seed)], check=True, capture_output=True, timeout=300)
    return out


def plant_corrupt_file(folder: Path) -> Path:
    """A gzip file cut short among the good ones (a copy that died half-way)."""
    whole = gzip.compress(b"".join(b'{"event_id": "x%d", "user_id": "u1"}\n' % i for i in range(2000)))
    path = folder / "date=2024-01-01" / "zz-cut.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])
    return path


def ingested(lake: Lake) -> dict[str, Counter]:
    """What the ingest tables hold, as multisets: event ids, quarantined (line key, reason), corrupt files.

    A table not created yet holds nothing.
    """
    def rows(table: str, *columns: str) -> Counter:
        if not lake.exists(table):
            return Counter()
        found = lake.read(table).select(*columns).collect()
        return Counter(r[0] if len(columns) == 1 else tuple(r) for r in found)

    return {"events": rows("events", "event_id"),
            "events_quarantine": rows("events_quarantine", "record_key", "reason"),
            "quarantined_files": rows("quarantined_files", "source_file")}


def ingest_recomputed(spark, tmp_path: Path, *folders: Path) -> dict[str, Counter]:
    """:func:`ingested` of one clean, in-process ingest of ``folders`` into a scratch lake."""
    cfg = load_config(overrides=[f"home={tmp_path / 'recomputed'}"])
    lake = open_lake(spark, cfg)
    for folder in folders:
        run_ingest(spark, lake, cfg, str(folder))
    return ingested(lake)


def assert_features_match_recomputation(spark, lake: Lake, cfg: RecsysConfig, scratch: Path) -> None:
    """Every feature table equals a full refresh over the lake's events (written to a scratch lake)."""
    scratch_cfg = load_config(overrides=[f"home={scratch}"])
    other = open_lake(spark, scratch_cfg)
    other.append(EVENTS_SPEC, lake.read("events"))
    run_refresh(spark, other, scratch_cfg)
    for entity in entities(cfg.features).values():
        assert_same_state(by_key(other.read(entity.table), entity), stored_states(lake, entity, cfg.features),
                          entity)
