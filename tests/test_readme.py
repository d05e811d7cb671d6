"""The README's "Use" lines and Python example run as written on a fresh machine (an empty data dir, no hub);
the lines that say they need more stop with one `mrb: error:` line naming what is missing."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mrb.cli import main
from mrb.results import read_leaderboard

README = Path(__file__).resolve().parents[1] / "README.md"
NEEDS = {  # the lines marked as needing more than a fresh machine → the start of their offline error
    "mrb run --model gmr-7b --tasks all --dry-run": "mrb: error: 40 tasks have no candidate pack yet in ",
    "mrb download --tasks SciFact --data-dir ~/mrb-data": "mrb: error: task 'SciFact': cannot fetch mteb/scifact at revision ",
}


def use_lines() -> list[tuple[str, str]]:
    """(command, comment) of each line of the README's Use block."""
    section = README.read_text(encoding="utf-8").split("## Use\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)  # type: ignore[union-attr]
    return [(line.partition("#")[0].strip(), line.partition("#")[2].strip()) for line in block.splitlines() if line.strip()]


def test_readme_use_lines_run_as_written(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MRB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    lines = use_lines()
    assert [c for c, comment in lines if comment.startswith("needs")] == list(NEEDS)
    for command, _ in lines:
        code = main([word for word in shlex.split(command)[1:]])
        out, err = capsys.readouterr()
        if command in NEEDS:
            assert code == 2 and err.startswith(NEEDS[command]) and err.count("\n") == 1, (command, err)
        else:
            assert code == 0, (command, err)
            assert "Traceback" not in out + err
    board = read_leaderboard(tmp_path / "results")
    assert sorted(set(board["model"])) == ["bm25", "oracle"]
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    source = README.read_text(encoding="utf-8").split("From Python:\n", 1)[1]
    code = re.search(r"```python\n(.*?)```", source, flags=re.S).group(1)  # type: ignore[union-attr]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # the README's own example
    board = namespace["board"].set_index("task")
    assert board.at["MiniFacts-T2T", "value"] == pytest.approx(0.7815790, abs=1e-6)  # the closure case of the trust issue
    assert (tmp_path / "results" / "leaderboard.parquet").exists()
