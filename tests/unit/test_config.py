from __future__ import annotations

from pathlib import Path

import pytest

from recsys_lib.core.config import ConfigError, RecsysConfig, load_config
from recsys_lib.core.durations import parse_duration

pytestmark = pytest.mark.unit
CONF = Path(__file__).resolve().parents[2] / "conf"


def test_defaults_are_the_embedded_local_setup(monkeypatch, tmp_path):
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path))
    cfg = load_config()
    assert cfg.spark.master is None
    assert cfg.lake.engine == "auto"
    assert cfg.home_dir == str(tmp_path)
    assert cfg.table_uri("events") == f"{tmp_path}/lake/events"
    assert cfg.landing_dir == f"{tmp_path}/landing"


def test_home_defaults_to_data_under_cwd(monkeypatch, tmp_path):
    monkeypatch.delenv("RECSYS_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert load_config().home_dir == str(tmp_path / "data")


def test_local_overlay_equals_the_defaults():
    assert load_config([CONF / "local.yaml"]) == RecsysConfig()


def test_cluster_overlay_loads_and_extends_base():
    cfg = load_config([CONF / "cluster.yaml"])
    assert cfg.lake_root == "s3://my-recsys-bucket/prod/lake"
    assert cfg.spark.shuffle_partitions == 400
    assert cfg.ingest.max_future_skew == 900.0
    assert cfg.ingest.max_line_bytes == 65536  # from base.yaml


def test_movielens_overlay_loads_with_time_local_batching():
    cfg = load_config([CONF / "movielens.yaml"])
    assert (cfg.train.batching, cfg.train.sampling_window, cfg.train.temperature) == ("time_local", 20000, 0.7)
    assert cfg.features.half_lives == (86400.0, 30 * 86400.0, 365 * 86400.0)  # 1d, 30d, 365d
    assert load_config().train.batching == "shuffled"


def test_bad_batching_value_is_named():
    with pytest.raises(ConfigError, match=r"train\.batching"):
        load_config(overrides=["train.batching=by_time"])


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'ingest\.max_line_byte'"):
        load_config(overrides=["ingest.max_line_byte=5"])


def test_unknown_key_in_a_file_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("spark:\n  mastr: local[2]\n")
    with pytest.raises(ConfigError, match=r"'spark\.mastr'"):
        load_config([bad])


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match=r"bad value for 'lake\.commit_retries'"):
        load_config(overrides=["lake.commit_retries=-1"])
    with pytest.raises(ConfigError, match=r"bad value for 'ingest\.max_future_skew'"):
        load_config(overrides=["ingest.max_future_skew=soon"])


def test_overrides_are_typed_and_later_wins():
    cfg = load_config(overrides=["ingest.max_line_bytes=1024", "ingest.max_line_bytes=2048",
                                 "spark.ui_enabled=true", "ingest.max_future_skew=15m"])
    assert cfg.ingest.max_line_bytes == 2048
    assert cfg.spark.ui_enabled is True
    assert cfg.ingest.max_future_skew == 900.0


def test_spark_conf_keys_keep_their_dots():
    cfg = load_config(overrides=["spark.conf.spark.sql.shuffle.partitions=7",
                                 "spark.master=local-cluster[2,1,1024]"])
    assert cfg.spark.conf == {"spark.sql.shuffle.partitions": "7"}
    assert cfg.spark.master == "local-cluster[2,1,1024]"


def test_malformed_override_and_missing_file():
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config(overrides=["no-equals-sign"])
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(["/nonexistent/recsys.yaml"])


def test_extends_cycle_is_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config([tmp_path / "a.yaml"])


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800),
                                               ("50ms", 0.05), (12, 12)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["soon", "-1h", "1y", True])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_the_dropped_native_engine_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="lake.engine"):
        load_config(overrides=["lake.engine=native"])
