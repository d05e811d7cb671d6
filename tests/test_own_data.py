"""docs/own-data.md, run as written: every file it shows is written, every command in it is run, in order."""

from __future__ import annotations

import json
import re
import runpy
import shlex
from pathlib import Path

import pandas as pd

from mrb.cli import main
from mrb.data import read_pack
from tests.packs import candidate_lists

DOC = Path(__file__).resolve().parents[1] / "docs" / "own-data.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def walk_through() -> list[tuple[str, str, str]]:
    """The doc's steps in order: ("file", name, text) for a python or yaml block whose first line is
    ``# <name>``, ("command", line, "") for each line of a bash block, ("output", "", text) for a text block."""
    steps = []
    for language, body in BLOCK.findall(DOC.read_text()):
        if language == "bash":
            steps += [("command", line.strip(), "") for line in body.splitlines() if line.strip()]
        elif language == "text":
            steps.append(("output", "", body))
        else:
            name = body.splitlines()[0].removeprefix("# ").strip()
            steps.append(("file", name, body))
    return steps


def test_every_command_of_the_walk_through_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MRB_DATA_DIR", str(tmp_path / "data"))
    printed = ""
    ran = []
    for kind, name, text in walk_through():
        if kind == "file":
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text)
        elif kind == "output":
            assert text in printed, f"the doc shows output the commands above it did not print:\n{text}"
        elif name.startswith("python "):
            runpy.run_path(shlex.split(name)[1], run_name="__main__")
            printed += capsys.readouterr().out
            ran.append(name)
        else:
            assert name.startswith("mrb "), name
            assert main(shlex.split(name)[1:]) == 0, name
            printed = capsys.readouterr().out
            ran.append(name)
    assert len(ran) == 12  # every command of the doc

    built = read_pack(tmp_path / "data" / "packs" / "MyPhotos")
    imported = read_pack(tmp_path / "imported" / "MyPhotos")
    assert candidate_lists(built) == candidate_lists(imported)  # the run holds the same lists
    assert (len(built.queries), len(built.candidates), built.manifest["retriever"]["name"]) == (20, 400, "given")
    assert imported.manifest["retriever"]["name"] == "imported"
    board = pd.read_parquet(tmp_path / "results" / "leaderboard.parquet").set_index("model")
    assert board.loc["first-stage", "value"] == board.loc["colour-match", "first_stage_value"]
    assert board.loc["colour-match", "value"] > board.loc["first-stage", "value"] + 0.3
    result = json.loads((tmp_path / "mteb-results" / "colour-match" / "no_revision_available" / "MRB-MyPhotos.json").read_text())
    assert result["dataset_revision"] == built.manifest["source"]["revision"]
    assert sorted(p.name for p in (tmp_path / "mteb-data" / "MyPhotos").iterdir()) == [
        "README.md",
        "corpus",
        "default",
        "queries",
        "top_ranked",
    ]
    assert len(read_pack(tmp_path / "my-pack").documents) == 200
