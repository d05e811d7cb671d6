"""The `mrb` command: exit codes, messages and what it prints."""

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import mrb
from mrb.cli import main
from tests.packs import small_text_task


@pytest.fixture
def tasks_dir(tmp_path):
    small_text_task(tmp_path / "tasks")
    return tmp_path / "tasks"


def test_run_then_report(tasks_dir, tmp_path, capsys):
    out = tmp_path / "results"
    assert (
        main(["run", "--model", "oracle", "--tasks", "all", "--task-dir", str(tasks_dir), "--output", str(out), "--quiet"]) == 0
    )
    printed = capsys.readouterr().out
    assert "| oracle      | **100.00** |       **100.00** | **100.00** |    **+34.97** |" in printed
    assert main(["report", "--results", str(out)]) == 0
    assert "| Small-T2T | T→T  |       65.03 | **100.00** |" in capsys.readouterr().out


def test_unknown_model_exits_2_with_suggestion(tasks_dir, capsys):
    assert main(["run", "--model", "bm52", "--task-dir", str(tasks_dir), "--tasks", "all", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mrb: error: unknown model 'bm52'. Did you mean: bm25?")


def test_unknown_task_exits_2(tasks_dir, capsys):
    assert main(["run", "--model", "oracle", "--task-dir", str(tasks_dir), "--tasks", "Smal-T2T", "--quiet"]) == 2
    assert capsys.readouterr().err == "mrb: error: no task matches 'Smal-T2T'. Did you mean: Small-T2T?\n"


def test_option_a_model_does_not_take(tasks_dir, capsys):
    assert main(["run", "--model", "oracle", "--task-dir", str(tasks_dir), "--tasks", "all", "--dtype", "bf16", "--quiet"]) == 2
    assert "Oracle does not take option(s) dtype" in capsys.readouterr().err


def test_report_without_results(tmp_path, capsys):
    assert main(["report", "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"mrb: error: no results in {tmp_path}: leaderboard.parquet is missing (run `mrb run` first)\n"
    )


def test_tasks_and_models_listings(tasks_dir, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["tasks", "--task-dir", str(tasks_dir)]) == 0
    out = capsys.readouterr().out
    assert "Small-T2T" in out and "per type: T→T 1" in out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "minilm" in out and "first-stage" in out and "oracle" in out


def test_verbosity_flags_set_what_mrb_logs(tmp_path, capsys):
    from mrb.cli import main

    out = tmp_path / "r"
    assert main(["run", "--model", "first-stage", "--tasks", "MiniFacts-T2T", "--output", str(out), "-v"]) == 0
    err = capsys.readouterr().err
    assert "INFO mrb.session: first-stage on MiniFacts-T2T: 0.8312448979158119" in err
    assert main(["run", "--model", "first-stage", "--tasks", "MiniFacts-T2T", "--output", str(out), "-q"]) == 0
    assert capsys.readouterr().err == ""  # no bars, no summary, no warnings


def test_models_reads_at_80_columns_without_splitting_a_name(capsys, monkeypatch):
    from mrb.cli import main
    from mrb.rerankers.presets import PRESETS

    monkeypatch.setenv("COLUMNS", "80")
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    starts = [line.split(":")[0].removesuffix(" *") for line in lines if line and not line.startswith(" ")]
    assert starts[2:] == list(PRESETS)  # after the two lines of the title, each block starts with its whole name


def test_version(capsys):
    from mrb import __version__
    from mrb.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"mrb {__version__}\n"


def test_a_constant_scorer_is_said_to_have_no_signal(tmp_path, caplog):
    import mrb

    with caplog.at_level("WARNING", logger="mrb.session"):
        mrb.evaluate(lambda pairs: [1.0] * len(pairs), "MiniFacts-T2T", quiet=True, name="flat")
    assert (
        "flat gave every candidate of every query one score on MiniFacts-T2T: no signal, the values equal the first stage's"
        in caplog.messages
    )


def test_report_into_a_closed_pipe_ends_quietly(tasks_dir, tmp_path):
    out = tmp_path / "results"
    assert main(["run", "--model", "oracle", "--tasks", "all", "--task-dir", str(tasks_dir), "--output", str(out), "-q"]) == 0
    env = {**os.environ, "PYTHONPATH": str(Path(mrb.__file__).resolve().parent.parent)}
    command = [sys.executable, "-m", "mrb", "report", "--results", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before MRB writes (what `| head -1` does to a long report)
    err = proc.stderr.read()
    assert (err, proc.wait()) == (b"", 128 + signal.SIGPIPE)  # no BrokenPipeError traceback, the status of SIGPIPE
    piped = subprocess.run(f"{shlex.join(command)} | head -1", shell=True, capture_output=True, env=env, check=True)
    assert (piped.stdout.decode(), piped.stderr) == ("## nDCG@10 by type, category and ALL (mean over tasks, ×100)\n", b"")
