from __future__ import annotations

import argparse

import pytest

from recsys_lib.cli import build_parser, main

pytestmark = pytest.mark.unit

COMMANDS = ["generate", "ingest", "adapt", "lake", "features", "training-set", "stream", "stream-status", "maintain",
            "config", "demo", "train", "evaluate", "promote", "export", "recommend", "recommendations", "forget"]
GROUPS = {"adapt": ["movielens", "taobao"], "lake": ["history"], "features": ["refresh", "catalogue"],
          "training-set": ["build"]}


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("argv", [[c, "--help"] for c in COMMANDS] + [["adapt", "movielens", "--help"],
                                                                     ["adapt", "taobao", "--help"],
                                                                     ["lake", "history", "--help"],
                                                                     ["features", "refresh", "--help"],
                                                                     ["training-set", "build", "--help"]])
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    if len(argv) == 2 and argv[0] in GROUPS:  # a group's help lists its actions; theirs take the options
        assert all(action in out for action in GROUPS[argv[0]]), out
    else:
        assert "--conf" in out


def test_bad_config_exits_2_naming_the_key(capsys):
    assert main(["config", "--set", "spark.nope=1"]) == 2
    assert "unknown config key 'spark.nope'" in capsys.readouterr().err


def test_job_failure_exits_1_with_a_message(tmp_path, capsys):
    code = main(["adapt", "taobao", "--input", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")])
    assert code == 1
    assert "missing.csv is not a file" in capsys.readouterr().err


def test_failure_shows_the_traceback_with_verbose(tmp_path, capsys, caplog):
    argv = ["adapt", "taobao", "--input", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")]
    assert main(argv) == 1
    assert "run again with -v" in capsys.readouterr().err
    assert not [r for r in caplog.records if r.exc_info]
    assert main([*argv[:2], "-v", *argv[2:]]) == 1
    logged = [r for r in caplog.records if r.exc_info]  # at ERROR: shown at -v's INFO level
    assert len(logged) == 1 and logged[0].levelname == "ERROR"
    assert "missing.csv is not a file" in str(logged[0].exc_info[1])


def test_generate_command_writes_a_dataset(tmp_path, capsys):
    out = tmp_path / "raw"
    assert main(["generate", "--out", str(out), "--events", "500", "--days", "2", "--users", "50",
                 "--items", "40", "--no-gzip"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["_manifest.json", "date=2024-01-01", "date=2024-01-02"]
    assert "500 events" in capsys.readouterr().out


def test_parser_is_shared_with_jobs():
    args = build_parser().parse_args(["ingest", "--input", "x", "--set", "a.b=1"])
    assert (args.command, args.input, args.overrides) == ("ingest", "x", ["a.b=1"])


@pytest.mark.parametrize("argv", [["maintain"], ["lake", "vacuum", "events"]])
def test_vacuum_refuses_a_retention_readers_may_still_need(tmp_path, capsys, argv):
    code = main([*argv, "--retention-hours", "1", "--set", f"home={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 1 and "UnsafeVacuum" in err
    assert "1 hours is shorter than the 169 hours" in err and "--force" in err  # 7 days + the 0.5 s trigger


def test_vacuum_retention_defaults_to_the_safe_minimum_and_force_overrides():
    from recsys_lib.core.config import load_config
    from recsys_lib.pipelines.maintenance import UnsafeVacuum, vacuum_retention

    cfg = load_config(overrides=["lake.longest_reader=2h", "streaming.trigger=30s"])
    assert vacuum_retention(cfg) == 3.0  # 2 h + 30 s, rounded up to the hour
    assert vacuum_retention(cfg, 3.0) == 3.0
    with pytest.raises(UnsafeVacuum, match="2.5 hours is shorter than the 3 hours"):
        vacuum_retention(cfg, 2.5)
    assert vacuum_retention(cfg, 0.0, force=True) == 0.0


def test_forget_without_people_is_a_clear_error_before_spark(tmp_path, capsys):
    assert main(["forget", "--set", f"home={tmp_path}"]) == 1
    assert "give --user ID (repeatable) or --users-file FILE" in capsys.readouterr().err
    assert not (tmp_path / "lake").exists()


def test_the_printed_config_has_no_secrets(tmp_path, capsys):
    assert main(["config", "--set", f"home={tmp_path}", "--set", "lake.storage_options.AZURE_STORAGE_SAS=sv=x&sig=y",
                 "--set", "online.redis_url=redis://:pw123@h:6379/0"]) == 0
    out = capsys.readouterr().out
    assert "sig=y" not in out and "pw123" not in out and '"AZURE_STORAGE_SAS": "***"' in out


def test_holdout_days_flag_overrides_the_config_after_set():
    from recsys_lib.cli_models import flag_overrides
    from recsys_lib.core.config import load_config

    args = build_parser().parse_args(["evaluate", "--holdout-days", "7", "--set", "train.holdout_days=3"])
    cfg = load_config([], [*args.overrides, *flag_overrides(args)])
    assert cfg.train.holdout_days == 7
    assert flag_overrides(build_parser().parse_args(["evaluate"])) == []


def test_seeds_below_one_is_a_usage_error_before_spark(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["evaluate", "--seeds", "0", "--set", f"home={tmp_path}"])
    assert exited.value.code == 2 and "--seeds: must be at least 1, got 0" in capsys.readouterr().err


def test_continuous_training_takes_a_positive_cycle_count(capsys):
    args = build_parser().parse_args(["train", "--continuous", "--cycles", "2"])
    assert args.continuous and args.cycles == 2
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["train", "--continuous", "--cycles", "x"])
    assert exited.value.code == 2 and "'x' is not a whole number" in capsys.readouterr().err


def _help_of(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_every_command_has_plain_help_with_an_example(capsys):
    from recsys_lib.cli_help import EXAMPLES, commands

    paths = [" ".join(path) for path, _, _ in commands(build_parser())]
    assert set(paths) <= set(EXAMPLES), f"commands without an example: {sorted(set(paths) - set(EXAMPLES))}"
    top = _help_of([], capsys)
    assert "exit codes:" in top and "3    a gate said no" in top
    for path in paths:
        out = _help_of(path.split(), capsys)
        assert "``" not in out and ":mod:" not in out and ":func:" not in out, (path, out)
        assert f"example:\n  {EXAMPLES[path]}" in out, path


def test_a_closed_pipe_stops_the_command_quietly():
    import fcntl
    import os
    import subprocess
    import sys

    # `recsys completion zsh | head -c 1`: the reader leaves after one byte; no BrokenPipeError traceback, exit 141
    read, write = os.pipe()
    fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, 4096)  # far below the 30 kB script: the writer is still writing at close
    cmd = [sys.executable, "-c", "import sys; from recsys_lib.cli import main; sys.exit(main(['completion', 'zsh']))"]
    proc = subprocess.Popen(cmd, stdout=write, stderr=subprocess.PIPE)
    os.close(write)
    with os.fdopen(read, "rb") as reader:
        assert reader.read(1) == b"#"
    assert proc.wait(timeout=60) == 141
    assert proc.stderr is not None and proc.stderr.read() == b""


def test_completion_scripts_know_the_commands_and_their_flags(capsys):
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert "tune" in script and "--warm-start" in script and "--ok-if-not-promoted" in script


def test_quiet_and_verbose_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["config", "-q", "-v"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_every_command_takes_summary_json():
    from recsys_lib.cli_help import commands

    leaves = [(path, sub) for path, sub, _ in commands(build_parser())
              if not any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)]
    assert len(leaves) > 20
    missing = [" ".join(path) for path, sub in leaves if "--summary-json" not in sub._option_string_actions]
    assert missing == ["completion"]  # prints a script; there is no job to summarise


def test_summary_json_holds_the_summary_and_the_exit_code_on_success_and_failure(tmp_path, capsys):
    import json

    ok, bad = tmp_path / "ok.json", tmp_path / "bad.json"
    out = tmp_path / "landing"
    argv = ["generate", "--out", str(out), "--users", "5", "--items", "4", "--days", "1", "--events", "30"]
    assert main([*argv, "--summary-json", str(ok)]) == 0
    written = json.loads(ok.read_text())
    assert (written["command"], written["exit_code"], written["valid_events"]) == ("generate", 0, 30)
    assert "error" not in written
    failing = ["adapt", "taobao", "--input", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "o")]
    assert main([*failing, "--summary-json", str(bad)]) == 1
    written = json.loads(bad.read_text())
    assert (written["command"], written["exit_code"]) == ("adapt taobao", 1)
    assert "missing.csv is not a file" in written["error"]
    assert main(["config", "--set", "spark.nope=1", "--summary-json", str(bad)]) == 2
    assert "spark.nope" in json.loads(bad.read_text())["error"]
