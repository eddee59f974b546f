"""A damaged Delta log entry fails every read with an error naming the file and the version."""

from __future__ import annotations

import pyarrow as pa
import pytest
from deltalake import write_deltalake

from recsys_lib.core.config import load_config
from recsys_lib.lake import CorruptLog, driver_lake

pytestmark = pytest.mark.faults


def test_a_cut_commit_file_is_named_not_skipped(tmp_path):
    cfg = load_config(overrides=[f"home={tmp_path}"])
    lake = driver_lake(cfg)
    for _ in range(3):
        write_deltalake(lake.uri("t"), pa.table({"a": [1]}), mode="append")
    assert lake.version("t") == 2
    commit = tmp_path / "lake" / "t" / "_delta_log" / f"{1:020d}.json"
    commit.write_text(commit.read_text()[:40])  # a commit cut short (a disk that filled up, a bad copy)
    lake = driver_lake(cfg)  # a process that opens the table now (one that had read it keeps its snapshot)
    for read in (lambda: lake.version("t"), lambda: lake.read_arrow("t"), lambda: lake.history("t", 5)):
        with pytest.raises(CorruptLog) as err:
            read()
        assert "version 1" in str(err.value) and str(commit) in str(err.value) and "line 1" in str(err.value)
