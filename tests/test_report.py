"""Aggregation, Borda rank, the paper's numbers, the consistency guard, formats, comparison and export."""

import json
import math
import sys
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest

import mrb
from mrb.cli import main
from mrb.data import Record
from mrb.errors import MRBError
from mrb.export import mteb_score_name
from mrb.report import (
    ALL,
    BORDA,
    GAIN,
    borda_ranks,
    column_intervals,
    draw_chart,
    load_reported,
    reported_for,
    summarise,
    to_markdown,
)
from mrb.results import LEADERBOARD_COLUMNS, read_leaderboards, read_per_query
from mrb.stats import bootstrap_ci
from tests.packs import combo_task, small_text_task, write_task


def board_row(model: str, task: str, type_: str, category: str, value: float | None, first: float, status: str = "ok") -> dict:
    row = dict.fromkeys(LEADERBOARD_COLUMNS)
    row.update(
        model=model,
        task=task,
        type=type_,
        category=category,
        metric="nDCG@10",
        value=value,
        first_stage_value=first,
        status=status,
        pack_hash=f"hash-{task}",
        metric_settings='{"depth": 100}',
        ci_low=value,
        ci_high=value,
    )
    return row


@pytest.fixture
def board():
    """Tasks A, B (T→T), F (I→I), C (I→T), D (IT→IT); model m1 has all, m2 lacks D (unsupported)."""
    rows = [
        board_row("m1", "A", "T→T", "single-modal", 0.50, 0.40),
        board_row("m1", "B", "T→T", "single-modal", 0.70, 0.60),
        board_row("m1", "F", "I→I", "single-modal", 0.20, 0.10),
        board_row("m2", "F", "I→I", "single-modal", 0.30, 0.10),
        board_row("m1", "C", "I→T", "cross-modal", 0.30, 0.20),
        board_row("m1", "D", "IT→IT", "fused-modal", 0.90, 0.80),
        board_row("m2", "A", "T→T", "single-modal", 0.60, 0.40),
        board_row("m2", "B", "T→T", "single-modal", 0.70, 0.60),
        board_row("m2", "C", "I→T", "cross-modal", 0.10, 0.20),
        board_row("m2", "D", "IT→IT", "fused-modal", None, 0.80, status="unsupported"),
    ]
    return pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)


def test_means_per_type_category_and_all_with_gain(board):
    table = summarise(board).table
    assert table.columns.tolist() == ["T→T", "I→I", "I→T", "IT→IT", "single-modal", "cross-modal", "fused-modal", ALL, GAIN]
    # a category and ALL are means over tasks (single-modal of m1: (0.5 + 0.7 + 0.2) / 3, not (0.6 + 0.2) / 2)
    expected = {
        "first stage": [0.50, 0.10, 0.20, 0.80, 1.1 / 3, 0.20, 0.80, 0.42, 0.0],
        "m1": [0.60, 0.20, 0.30, 0.90, 1.4 / 3, 0.30, 0.90, 0.52, 0.10],
        "m2": [0.65, 0.30, 0.10, math.nan, 1.6 / 3, 0.10, math.nan, math.nan, math.nan],  # lacks D: empty, not partial
    }
    for label, values in expected.items():
        assert table.loc[label].tolist() == pytest.approx(values, nan_ok=True, abs=1e-12), label


def test_borda_counts_wins_and_half_ties():
    matrix = pd.DataFrame({"A": [0.4, 0.5, 0.6], "B": [0.6, 0.7, 0.7], "C": [0.2, 0.3, math.nan]}, index=["fs", "m1", "m2"])
    # points: fs 0 + 0 + 0; m1 1 + 1.5 (ties m2) + 1; m2 2 + 1.5 and sits C out → m1 and m2 share rank 1
    assert borda_ranks(matrix).to_dict() == {"fs": 3.0, "m1": 1.0, "m2": 1.0}
    matrix.loc["m2", "B"] = 0.8  # now m2 has 4 points against m1's 3
    assert borda_ranks(matrix).to_dict() == {"fs": 3.0, "m1": 2.0, "m2": 1.0}
    tied = pd.DataFrame({"A": [0.5, 0.5, 0.1]}, index=["x", "y", "z"])
    assert borda_ranks(tied).to_dict() == {"x": 1.0, "y": 1.0, "z": 3.0}


def test_markdown_bold_best_and_borda(board):
    text = to_markdown(summarise(board, borda=True))
    assert text.splitlines()[2:7] == [
        "| model       |   T→T (2) |   I→I (1) |   I→T (1) | IT→IT (1) | single-modal (3) | cross-modal (1) | fused-modal (1) "
        "|   ALL (5) | Δ first stage | Borda rank |",
        "|:------------|----------:|----------:|----------:|----------:|-----------------:|----------------:|----------------:"
        "|----------:|--------------:|-----------:|",
        "| first stage |     50.00 |     10.00 |     20.00 |     80.00 |            36.67 |           20.00 |           80.00 "
        "|     42.00 |         +0.00 |          3 |",
        "| m1          |     60.00 |     20.00 | **30.00** | **90.00** |            46.67 |       **30.00** |       **90.00** "
        "| **52.00** |    **+10.00** |      **1** |",
        "| m2          | **65.00** | **30.00** |     10.00 |         ✗ |        **53.33** |           10.00 |               ✗ "
        "|         ✗ |             ✗ |          2 |",
    ]
    assert "| B    | T→T   |       60.00 | **70.00** | **70.00** |" in text  # a tie: both bold


def test_reported_numbers_load_with_source_and_gaps():
    (paper,) = load_reported()
    assert paper.url == "https://arxiv.org/abs/2510.14824" and paper.first_stage == "GME-2B"
    assert paper.values.columns.tolist() == ["T→T", "T→VD", "IT→IT", ALL]
    assert paper.values.loc["GMR-7B"].tolist() == [0.6108, 0.7294, 0.8219, 0.6385]
    assert paper.task_counts[ALL] == 40


def test_reported_files_are_checked(tmp_path):
    path = tmp_path / "x.yaml"
    head = "source: s\nurl: u\nmetric: nDCG@10\nsuite: mrb\n"
    path.write_text(head + "first_stage: A\ntasks: {ALL: 2}\nmodels:\n  - {model: A, ALL: 50.0, T2T: 1}\n")
    with pytest.raises(MRBError) as err:
        load_reported(tmp_path)
    assert str(err.value) == f"{path}: model 'A' has unknown column(s) T2T"
    path.write_text("source: s\nmetric: nDCG@10\nmodels: []\n")
    with pytest.raises(MRBError) as err:
        load_reported(tmp_path)
    assert str(err.value) == f"{path}: missing key(s) url, first_stage, suite, tasks"
    path.write_text(head + "first_stage: B\ntasks: {ALL: 2}\nmodels:\n  - {model: A, ALL: 50.0}\n")
    with pytest.raises(MRBError) as err:
        load_reported(tmp_path)
    assert str(err.value) == f"{path}: first_stage 'B' is not one of its models"
    path.write_text(head + "first_stage: A\ntasks: {ALL: 2}\nmodels:\n  - {model: A, ALL: 50.0, T→T: 40, IT→T: 3}\n")
    with pytest.raises(MRBError) as err:
        load_reported(tmp_path)
    assert str(err.value) == f"{path}: tasks gives no task count for column(s) T→T, IT→T"


def test_reported_rows_render_beside_runs_never_bold_with_both_task_counts(board):
    text = to_markdown(summarise(board, load_reported()))
    lines = text.splitlines()
    # a header counts the tasks of each kind of row: yours, then the paper's where they differ
    assert lines[2] == (
        "| model                        | T→T (2; reported 14) |   I→I (1) | T→VD (reported 5) |   I→T (1) "
        "| IT→IT (1; reported 3) | single-modal (3) | cross-modal (1) | fused-modal (1) | ALL (5; reported 40) | Δ first stage |"
    )
    assert lines[6] == (
        "| m2                           |            **65.00** | **30.00** |                 ○ |     10.00 "
        "|                     ✗ |        **53.33** |           10.00 |               ✗ |                    ✗ |             ✗ |"
    )
    assert lines[11] == (
        "| GMR-7B (reported)            |                61.08 |         – |             72.94 |         – "
        "|                 82.19 |                – |               – |               – |                63.85 |        +11.31 |"
    )
    assert lines[7].startswith("| GME-2B (reported)            |                49.59 |         – |             66.39 |")
    assert "Their columns average the mrb suite's tasks (T→T 14, T→VD 5, IT→IT 3, ALL 40)" in text


def test_reported_rows_only_beside_their_suite(board):
    (paper,) = load_reported()
    assert paper.suite == "mrb"
    assert reported_for(board, [paper]) == []  # tasks A … F are not the paper's
    assert reported_for(board, [paper], wanted=True) == [paper]
    mrb_tasks = board.assign(task=board["task"].map({"A": "ArguAna", "B": "NQ", "F": "NIGHTS", "C": "CIRR", "D": "E-VQA"}))
    assert reported_for(mrb_tasks, [paper]) == [paper]  # some of the paper's tasks: its rows are context
    assert reported_for(mrb_tasks, [paper], wanted=False) == []
    mini = pd.DataFrame({"task": ["MiniFacts-T2T", "ArguAna"]})
    assert reported_for(mini, [paper]) == []  # one task outside the suite is enough to leave them out


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """oracle, first-stage and bm25 run on Small-T2T and Other-T2T into one results folder (read only)."""
    tmp_path = tmp_path_factory.mktemp("runs")
    tasks = tmp_path / "tasks"
    small_text_task(tasks)
    small_text_task(tasks, "Other-T2T")
    out = tmp_path / "results"
    for model in ("oracle", "first-stage", "bm25"):
        mrb.evaluate(model, "all", task_dirs=[tasks], quiet=True, output_dir=out)
    return out


def test_paper_numbers_in_mrb_report(results, capsys):
    assert main(["report", "--results", str(results)]) == 0
    assert "(reported)" not in capsys.readouterr().out  # Small-T2T and Other-T2T are not the paper's tasks
    assert main(["report", "--results", str(results), "--reported"]) == 0
    out = capsys.readouterr().out
    assert (
        "| GMR-3B (reported)            |                59.22 |             72.38 |              79.08 "
        "|                – |                61.40 |         +8.86 |"
    ) in out
    assert "| first-stage                  |                65.03 |                 ○ |                  ○ |" in out
    with pytest.raises(SystemExit):
        main(["report", "--results", str(results), "--reported", "--no-reported"])
    assert "argument --no-reported: not allowed with argument --reported" in capsys.readouterr().err


def mixed_folder(tmp_path, name: str, *, ignore_identical_ids: bool):
    """Small-T2T with one more judged document (another pack hash), run with the first stage."""
    tasks = tmp_path / f"tasks-{name}"
    write_task(
        tasks,
        "Small-T2T",
        queries=[Record("q1", "cats")],
        documents=[Record("d0", "cats"), Record("d1", "dogs")],
        candidates=[("q1", "d1", 1, 0.9), ("q1", "d0", 2, 0.8)],
        qrels=[("q1", "d0", 1)],
        extra_yaml=f"ignore_identical_ids: {str(ignore_identical_ids).lower()}\n",
    )
    out = tmp_path / name
    mrb.evaluate("first-stage", "all", task_dirs=[tasks], quiet=True, output_dir=out)
    return out


def test_guard_names_what_differs_and_allow_mixed(results, tmp_path, capsys):
    other = mixed_folder(tmp_path, "other", ignore_identical_ids=True)
    hashes = {folder: read_leaderboards([folder])["pack_hash"].iloc[0] for folder in (results, other)}
    # first-stage is in both folders: the same (model, task) twice is refused first
    assert main(["report", "--results", str(results), "--results", str(other)]) == 2
    assert capsys.readouterr().err == (
        f"mrb: error: model 'first-stage' has results for task Small-T2T in both {results} and {other}; "
        "report those folders separately\n"
    )
    board = pd.read_parquet(other / "leaderboard.parquet").assign(model="fs-elsewhere", mrb_version="0.0.9")
    board.to_parquet(other / "leaderboard.parquet")
    assert main(["report", "--results", str(results), "--results", str(other), "--no-reported"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "mrb: error: results computed on different packs or with different metric settings would be mixed:\n"
        f"  Small-T2T: pack_hash {hashes[results]} (oracle, first-stage, bm25) vs {hashes[other]} (fs-elsewhere); "
        "ignore_identical_ids false (oracle, first-stage, bm25) vs true (fs-elsewhere)\n"
        "rerun the models on the same pack and settings, or pass --allow-mixed to report them anyway\n"
    )
    assert main(["report", "--results", str(results), "--results", str(other), "--no-reported", "--allow-mixed"]) == 0
    out = capsys.readouterr().out
    assert f"Mixed results (--allow-mixed), first-stage value from the first row: Small-T2T: pack_hash {hashes[results]}" in out
    assert (
        f"Results come from several MRB versions: {mrb.__version__} (oracle, first-stage, bm25) vs 0.0.9 (fs-elsewhere)." in out
    )
    assert (
        main(["report", "--results", str(results), "--results", str(other), "--allow-mixed", "--compare", "bm25", "oracle"]) == 0
    )
    out = capsys.readouterr().out
    assert f"Mixed results (--allow-mixed), first-stage value from the first row: Small-T2T: pack_hash {hashes[results]}" in out


def test_compare_two_models(results, capsys):
    assert main(["report", "--results", str(results), "--compare", "first-stage", "oracle"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "## oracle vs first-stage: nDCG@10 (×100), paired randomisation test"
    assert lines[2:7] == [
        "| task      | type | queries | first-stage | oracle | Δ (oracle − first-stage) |      p |",
        "|:----------|:-----|--------:|------------:|-------:|-------------------------:|-------:|",
        "| Other-T2T | T→T  |       2 |       65.03 | 100.00 |                   +34.97 | 0.4882 |",
        "| Small-T2T | T→T  |       2 |       65.03 | 100.00 |                   +34.97 | 0.4882 |",
        "| ALL (2)   |      |       4 |       65.03 | 100.00 |                   +34.97 | 0.1243 |",
    ]  # exact values: 2/4 per task (2 queries), 2/16 over both tasks
    assert main(["report", "--results", str(results), "--compare", "first stage", "oracle"]) == 0
    assert capsys.readouterr().out.splitlines()[4:7] == [line.replace("first-stage", "first stage") for line in lines[4:7]]
    assert main(["report", "--results", str(results), "--compare", "first-stage", "orakle"]) == 2
    assert capsys.readouterr().err == (
        "mrb: error: model 'orakle' has no results here (models: 'first stage', 'oracle', 'first-stage', 'bm25')\n"
    )


def test_csv_and_json(results, tmp_path, capsys):
    assert main(["report", "--results", str(results), "--format", "csv", "--no-reported"]) == 0
    printed = capsys.readouterr().out
    assert (
        main(["report", "--results", str(results), "--format", "csv", "--no-reported", "--output", str(tmp_path / "r.csv")]) == 0
    )
    assert (tmp_path / "r.csv").read_text() == printed and capsys.readouterr().out == ""
    frame = pd.read_csv(tmp_path / "r.csv")
    assert frame.columns.tolist() == ["model", "kind", "T→T", "single-modal", ALL, GAIN, "Other-T2T", "Small-T2T"]
    assert frame["kind"].tolist() == ["first stage", "run", "run", "run"]
    assert frame.loc[frame["model"] == "oracle", ALL].item() == 1.0
    assert main(["report", "--results", str(results), "--format", "json", "--borda", "--reported"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["columns"] == {"T→T": 2, "T→VD": 0, "IT→IT": 0, "single-modal": 2, ALL: 2}
    assert payload["reported_columns"] == {"T→T": 14, "T→VD": 5, "IT→IT": 3, ALL: 40}
    assert payload["empty"]["oracle"] == {"T→VD": "not run", "IT→IT": "not run"}
    published = "no number published"
    assert payload["empty"]["GMR-7B (reported)"] == {"single-modal": published, "Other-T2T": published, "Small-T2T": published}
    oracle = next(r for r in payload["rows"] if r["model"] == "oracle")
    assert (oracle[BORDA], oracle["T→VD"], oracle[ALL]) == (1.0, None, 1.0)
    gmr = next(r for r in payload["rows"] if r["model"] == "GMR-7B (reported)")
    assert (gmr["kind"], gmr["T→T"], gmr[BORDA], gmr["Small-T2T"]) == ("reported", 0.6108, None, None)
    detail = next(t for t in payload["tasks"] if t["model"] == "first-stage" and t["task"] == "Small-T2T")
    assert (detail["RR@10"], detail["Judged@10"], detail["first_stage_R@100"]) == (0.5, 0.625, 1.0)


@pytest.fixture(scope="module")
def mini_results(tmp_path_factory):
    """random, bm25 (text only: unsupported on the image tasks) and a constant scorer (no signal) on mini (read only)."""
    out = tmp_path_factory.mktemp("mini") / "results"

    def constant(pairs):
        return [0.5] * len(pairs)

    for model in ("random", "bm25", constant):
        mrb.evaluate(model, "mini", quiet=True, output_dir=out)
    return out


def svg_texts(path) -> list[str]:
    root = ElementTree.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    return ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_chart_formats_by_extension(mini_results, results, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from PIL import Image

    written = {}
    for suffix in ("png", "pdf", "svg"):
        path = tmp_path / f"chart.{suffix}"
        assert main(["report", "--results", str(mini_results), "--format", "chart", "--output", str(path)]) == 0
        assert capsys.readouterr().err == f"chart written to {path}\n"
        written[suffix] = path.read_bytes()
    assert written["png"][:8] == b"\x89PNG\r\n\x1a\n" and Image.open(tmp_path / "chart.png").info["dpi"] == pytest.approx(
        (300, 300), abs=0.01
    )
    assert written["pdf"][:5] == b"%PDF-"
    texts = svg_texts(tmp_path / "chart.svg")  # text stays text: the value labels, the columns with their task counts
    assert {"17.45", "83.12", "74.30", "23.87", "T→T (1)", "ALL (5)", "unsupported", "constant ≡"} <= set(texts)
    assert b"<pattern" in written["svg"]  # the hatch of bm25's unsupported columns
    # the same results give the same bytes (no timestamp), and --format png takes the extension too
    again = tmp_path / "again.svg"
    assert main(["report", "--results", str(mini_results), "--format", "png", "--output", str(again)]) == 0
    assert again.read_bytes() == written["svg"]
    assert main(["report", "--results", str(results), "--format", "chart", "--output", str(again)]) == 0
    assert b"<pattern" not in again.read_bytes() and "100.00" in svg_texts(again)
    capsys.readouterr()
    bad = tmp_path / "chart.jpg"
    assert main(["report", "--results", str(results), "--format", "chart", "--output", str(bad)]) == 2
    assert capsys.readouterr().err == (
        f"mrb: error: --output {bad}: a chart is written as PNG, PDF or SVG, chosen by the extension (.png, .pdf or .svg)\n"
    )
    assert main(["report", "--results", str(results), "--format", "chart"]) == 2
    assert capsys.readouterr().err == (
        "mrb: error: --format chart draws the leaderboard chart into a file: give --output FILE.png, FILE.pdf or FILE.svg "
        "(and no --compare)\n"
    )


def test_chart_whiskers_are_the_stored_interval_or_the_bootstrap_of_the_mean(mini_results):
    board = read_leaderboards([mini_results])
    summary = summarise(board)
    intervals = column_intervals(board, summary, ["T→T", "IT→T", ALL])
    stored = board.set_index(["model", "task"])
    for label, column, task in (
        ("random", "T→T", "MiniFacts-T2T"),
        ("bm25", "T→T", "MiniFacts-T2T"),
        ("random", "IT→T", "MiniPhotoQA-IT2T"),
    ):
        assert intervals[label, column] == tuple(stored.loc[(label, task), ["ci_low", "ci_high"]])  # one task: its own
    per_query = [read_per_query(mini_results, "random", task)["value"] for task in summary.tasks["task"]]
    assert intervals["random", ALL] == bootstrap_ci(per_query, weights=[0.2] * 5)
    assert intervals["random", ALL][0] < summary.table.at["random", ALL] < intervals["random", ALL][1]
    first = [read_per_query(mini_results, "random", task)["first_stage_value"] for task in summary.tasks["task"]]
    assert intervals["first stage", ALL] == bootstrap_ci(first, weights=[0.2] * 5)
    assert ("bm25", ALL) not in intervals  # no value, no whisker


def test_chart_without_matplotlib_names_the_extra(board, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MRBError) as err:
        draw_chart(summarise(board), {})
    assert str(err.value) == "the chart needs matplotlib: pip install 'mrb[plot]'"


def test_adapted_and_no_signal_results_are_marked_and_footnoted(board):
    flagged = board.copy()
    flagged["adapted"] = ""
    flagged.loc[(flagged["model"] == "m1") & flagged["task"].isin(["C", "D"]), "adapted"] = "image-only"
    flagged["no_signal"] = (flagged["model"] == "m2") & (flagged["task"] == "B")
    text = to_markdown(summarise(flagged))
    lines = text.splitlines()
    assert lines[5].startswith("| m1 †        |     60.00 |")
    assert lines[6].startswith("| m2 ≡        | **65.00** |")
    assert lines[10] == "| task | type  | first stage |       m1 † |       m2 ≡ |"
    assert "| B    | T→T   |       60.00 |  **70.00** | **70.00≡** |" in lines
    assert "| C    | I→T   |       20.00 | **30.00†** |      10.00 |" in lines
    assert "| D    | IT→IT |       80.00 | **90.00†** |          ✗ |" in lines
    assert "| C    | m1    |  30.00† | 30.00–30.00 |        |      |           |                   |" in lines
    assert "† adapted: scored through a declared modality fallback, not the model's own sides: m1 (image-only on C, D)." in lines
    assert (
        "≡ no signal: equals the first stage (the model gave every candidate of every query one score, so its values are "
        "the first stage's): m2 on B." in lines
    )


def test_a_constant_scorer_is_flagged_in_the_report(mini_results, capsys):
    assert main(["report", "--results", str(mini_results)]) == 0
    out = capsys.readouterr().out
    assert "| constant ≡  | **83.12** | **64.30** | **73.09** | **74.59** | **76.38** |" in out  # a callable takes every side
    assert "| MiniFacts-T2T    | T→T  |   **83.12** |  17.45 | 82.23 | **83.12≡** |" in out
    assert "| MiniPhotos-I2I   | I→I  |   **64.30** |  27.89 |     ✗ | **64.30≡** |" in out
    assert (
        "≡ no signal: equals the first stage (the model gave every candidate of every query one score, so its values are the "
        "first stage's): constant on MiniFacts-T2T, MiniPhotos-I2I, MiniPhotos-T2I, MiniPhotos-I2T, MiniPhotoQA-IT2T." in out
    )


def test_mteb_export(results, tmp_path, capsys):
    out = tmp_path / "mteb"
    assert main(["report", "--results", str(results), "--export-mteb", str(out), "--no-reported"]) == 0
    assert capsys.readouterr().err == f"MTEB-style results: 6 file(s) under {out}/\n"
    data = json.loads((out / "first-stage" / "no_revision_available" / "MRB-Small-T2T.json").read_text())
    board = read_leaderboards([results]).set_index(["model", "task"])
    row = board.loc[("first-stage", "Small-T2T")]
    # a pack-only task has no source revision; the pack hash rides along, and the name never passes for MTEB's own
    assert (data["dataset_revision"], data["mrb_pack_hash"], data["task_name"], data["mteb_version"]) == (
        "revision_not_applicable",
        row["pack_hash"],
        "MRB-Small-T2T",
        "2.26.24",
    )
    assert data["scores"]["test"][0] == {
        "ndcg_at_10": row["value"],
        "main_score": row["value"],
        "mrr_at_10": 0.5,
        "recall_at_10": 1.0,
        "judged_at_10": 0.625,
        "first_stage_recall_at_100": 1.0,
        "first_stage_ndcg_at_10": row["value"],
        "main_score_ci95_low": row["ci_low"],
        "main_score_ci95_high": row["ci_high"],
        "hf_subset": "default",
        "languages": ["eng-Latn"],
    }
    oracle = json.loads((out / "oracle" / "no_revision_available" / "MRB-Small-T2T.json").read_text())["scores"]["test"][0]
    assert (oracle["ndcg_at_10"], oracle["first_stage_ndcg_at_10"]) == (board.loc[("oracle", "Small-T2T"), "value"], row["value"])
    assert oracle["ndcg_at_10"] > row["value"]  # the reranked and the first-stage values are told apart
    assert json.loads((out / "oracle" / "no_revision_available" / "model_meta.json").read_text()) == {
        "name": "oracle",
        "revision": None,
    }
    assert [mteb_score_name(m) for m in ("nDCG@10", "RR@10", "R@100", "P@5", "Judged@10")] == [
        "ndcg_at_10",
        "mrr_at_10",
        "recall_at_100",
        "precision_at_5",
        "judged_at_10",
    ]


def test_bootstrap_ci_stored_per_task(results):
    board = read_leaderboards([results]).set_index(["model", "task"])
    row = board.loc[("first-stage", "Small-T2T")]
    assert row["ci_low"] < row["value"] < row["ci_high"]
    assert json.loads(row["metric_settings"])["bootstrap"] == {"level": 0.95, "resamples": 1000, "seed": 0}
    assert board.loc[("oracle", "Small-T2T"), ["ci_low", "ci_high"]].tolist() == [1.0, 1.0]
    assert np.isfinite(board["ci_low"]).all()


def test_composite_task_measures_ci_and_comparison_weigh_parts_equally(tmp_path, capsys):
    root, out = tmp_path / "tasks", tmp_path / "r"
    combo_task(root)
    for model in ("first-stage", "oracle"):
        mrb.evaluate(model, "Combo", task_dirs=[root], quiet=True, output_dir=out)
    board = read_leaderboards([out]).set_index("model")
    fs = board.loc["first-stage"]
    # Judged@10 by hand: part a 3/4 and 1/2 → 0.625; part b 1/2; mean of parts, not of the 3 queries (0.5833)
    assert fs["Judged@10"] == 0.5625
    assert (fs["RR@10"], fs["R@10"]) == (0.5, 1.0)
    part_b = 1 / math.log2(3)
    queries_a = pd.read_parquet(out / "first-stage" / "Combo.parquet").query("part == 'Combo-a'")["value"]
    assert (queries_a.min() + part_b) / 2 <= fs["ci_low"] < fs["value"] < fs["ci_high"] <= (queries_a.max() + part_b) / 2
    assert main(["report", "--results", str(out), "--compare", "first-stage", "oracle", "--format", "json"]) == 0
    combo, _ = json.loads(capsys.readouterr().out)["rows"]
    assert combo["first-stage"] == pytest.approx(fs["value"], abs=1e-12)
    assert combo["delta"] == pytest.approx(1 - fs["value"], abs=1e-12) and combo["queries"] == 3
