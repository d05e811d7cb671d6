"""The depth ablation from one pass equals separate runs at each depth, exactly; what it cannot know it refuses."""

import json
import shutil

import pandas as pd
import pytest

import mrb
from mrb.cache import ScoreCache, task_key
from mrb.cli import main
from mrb.data import Record, read_pack
from mrb.errors import MRBError
from mrb.evaluation import TaskEvaluator, pack_hash
from mrb.identity import ModelIdentity
from mrb.report import ALL, depth_summaries, summarise
from mrb.rerankers import get_reranker
from mrb.results import read_leaderboard, read_leaderboards
from mrb.runner import run_task
from mrb.tasks import load_tasks
from tests.packs import combo_task, small_text_task, write_task

COMPARED = ["value", "first_stage_value", "ci_low", "ci_high", "RR@10", "R@10", "Judged@10", "first_stage_R@100"]
COMPARED += ["n_queries", "metric_settings", "pack_hash", "no_signal", "status", "depth"]


@pytest.fixture(scope="module")
def mini_random(tmp_path_factory):
    """random on mini at the tasks' depth (20), into a results folder (read only)."""
    out = tmp_path_factory.mktemp("depths") / "results"
    mrb.evaluate("random", "mini", quiet=True, output_dir=out)
    return out


def separate_run(depth: int, tasks: str = "mini", task_dirs=None):
    """Each task run afresh at `depth` (no cache), as leaderboard rows."""
    reranker = get_reranker("random")
    identity = ModelIdentity("random", {"adapter": "random"})
    rows = []
    for spec in load_tasks(tasks, task_dirs=task_dirs):
        scores = run_task(spec.model_copy(update={"depth": depth}), reranker)
        rows.append(scores.stamped(identity, {}, {}).row())
    return rows


def test_the_mini_depth_table_equals_separate_runs_at_5_10_20(mini_random):
    rows = mrb.evaluate("random", "mini", quiet=True, depths=[20, 5, 10])
    assert rows["depth"].tolist() == [5] * 5 + [10] * 5 + [20] * 5
    summaries = depth_summaries(rows)
    for depth in (5, 10, 20):
        alone = separate_run(depth)
        got = rows[rows["depth"] == depth]
        for expected, row in zip(alone, got.to_dict("records")):
            assert {c: row[c] for c in COMPARED} == {c: expected[c] for c in COMPARED}, (depth, row["task"])
        separate = summarise(pd.DataFrame(alone).assign(model="random")).table
        assert summaries[depth].table.equals(separate)  # every type, category and ALL mean, exactly
    assert summaries[5].table.at["random", ALL] != summaries[20].table.at["random", ALL]
    # the full depth is the ordinary result, exactly; the folder's run gives the same from its own cache
    ordinary = read_leaderboard(mini_random)
    full = rows[rows["depth"] == 20]
    assert full[COMPARED].reset_index(drop=True).equals(ordinary[COMPARED].reset_index(drop=True))


def test_mrb_report_depths_from_the_runs_cache(mini_random, tmp_path, capsys):
    assert main(["report", "--results", str(mini_random), "--depths", "5,10,20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("## nDCG@10 by reranking depth: the top d of the first stage reranked, the rest in its order (×100)")
    assert lines[2:8] == [
        "| model       | depth | T→T (1) | I→I (1) | T→I (1) | I→T (1) | IT→T (1) | single-modal (2) | cross-modal (2) "
        "| fused-modal (1) | ALL (5) | Δ first stage |",
        "|:------------|:------|--------:|--------:|--------:|--------:|---------:|-----------------:|----------------:"
        "|----------------:|--------:|--------------:|",
        "| first stage | any   |   83.12 |   64.30 |   73.09 |   74.59 |    76.38 |            73.71 |           73.84 "
        "|           76.38 |   74.30 |         +0.00 |",
        "| random      | 5     |   51.37 |   53.81 |   55.42 |   65.20 |    52.92 |            52.59 |           60.31 "
        "|           52.92 |   55.74 |        -18.55 |",
        "| random      | 10    |   40.84 |   46.79 |   44.63 |   50.42 |    43.63 |            43.82 |           47.52 "
        "|           43.63 |   45.26 |        -29.04 |",
        "| random      | 20    |   17.45 |   27.89 |   25.76 |   30.25 |    18.02 |            22.67 |           28.00 "
        "|           18.02 |   23.87 |        -50.42 |",
    ]
    assert "Every depth comes from the cached scores of one run at the deepest (20): no pair was scored again." in lines
    assert main(["report", "--results", str(mini_random), "--depths", "5,20", "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["depths"] == [5, 20]
    at = {(r["model"], r["depth"]): r for r in payload["rows"]}
    assert at["random", "20"][ALL] == summarise(read_leaderboard(mini_random)).table.at["random", ALL]  # the full depth
    assert at["first stage", "any"][ALL] == summarise(read_leaderboard(mini_random)).table.at["first stage", ALL]
    chart = tmp_path / "depths.svg"
    assert (
        main(["report", "--results", str(mini_random), "--depths", "5,10,20", "--format", "chart", "--output", str(chart)]) == 0
    )
    assert chart.read_text().startswith("<?xml") and "<svg" in chart.read_text()


def test_depths_refuse_what_the_run_did_not_score(mini_random, tmp_path, capsys):
    assert main(["report", "--results", str(mini_random), "--depths", "5,30"]) == 2
    assert capsys.readouterr().err == (
        "mrb: error: model 'random' on task MiniFacts-T2T reranked the top 20 only: the scores of depth 30 were never computed\n"
    )
    assert main(["report", "--results", str(mini_random), "--depths", "5,x"]) == 2
    assert capsys.readouterr().err == (
        "mrb: error: --depths '5,x': give positive whole numbers separated by commas, e.g. 10,25,50,100\n"
    )
    copy = tmp_path / "copy"
    shutil.copytree(mini_random, copy)
    row = read_leaderboards([copy]).iloc[0]
    (spec,) = load_tasks(row["task"])
    pack = read_pack(spec.pack_path())
    cache = ScoreCache(copy / "cache", ModelIdentity.from_json(row["identity"]), task_key(spec, pack))
    shutil.rmtree(cache.folder)
    first = TaskEvaluator(spec.model_copy(update={"depth": 5}), pack).candidates.iloc[0]
    assert main(["report", "--results", str(copy), "--depths", "5,10"]) == 2
    assert capsys.readouterr().err == (
        f"mrb: error: model 'random' on task {row['task']}: 80 of the 80 pairs of depth 5 have no score in the cache "
        f"{cache.folder} (first: query {first['query_id']!r}, document {first['doc_id']!r}); run the model on the task into "
        "its results folder again (it scores only the pairs the cache lacks)\n"
    )
    with pytest.raises(MRBError) as err:
        mrb.evaluate("random", "mini", quiet=True, depths=[5, 50])
    assert str(err.value) == (
        "depth 50 is deeper than task MiniFacts-T2T reranks (20): the depths come from the scores of one run at the task's depth"
    )
    with pytest.raises(MRBError) as err:
        mrb.evaluate("random", "mini", quiet=True, depths=[0, 5])
    assert str(err.value) == "depths [0, 5]: give positive whole numbers, e.g. [10, 25, 50, 100]"


def test_depths_refuse_a_changed_pack_or_changed_rules(tmp_path, capsys):
    tasks, out = tmp_path / "tasks", tmp_path / "results"
    small_text_task(tasks)
    mrb.evaluate("random", "all", task_dirs=[tasks], quiet=True, output_dir=out)
    stored = read_leaderboard(out)["pack_hash"].iloc[0]
    (tasks / "Small-T2T.yaml").write_text((tasks / "Small-T2T.yaml").read_text() + "ignore_identical_ids: true\n")
    assert main(["report", "--results", str(out), "--depths", "2", "--task-dir", str(tasks)]) == 2
    assert capsys.readouterr().err == (
        "mrb: error: model 'random' on task Small-T2T: the task's YAML no longer gives the rules of the results "
        "(ignore_identical_ids differ)\n"
    )
    shutil.rmtree(tasks)
    write_task(
        tasks,
        "Small-T2T",
        queries=[Record("q1", "cats"), Record("q2", "boats")],
        documents=[Record(f"d{i}", f"document {i}") for i in range(4)],
        candidates=[("q1", "d1", 1, 0.9), ("q1", "d0", 2, 0.8), ("q2", "d0", 1, 0.5), ("q2", "d3", 2, 0.4)],
        qrels=[("q1", "d0", 2), ("q2", "d3", 1)],
    )
    assert main(["report", "--results", str(out), "--depths", "1", "--task-dir", str(tasks)]) == 2
    now = pack_hash(read_pack(tasks / "packs" / "Small-T2T"))
    assert capsys.readouterr().err == (
        f"mrb: error: model 'random' on task Small-T2T: the pack read now (hash {now}) is not the one the model was scored "
        f"on ({stored}); rebuild that pack or rerun the model\n"
    )
    assert main(["report", "--results", str(out), "--depths", "1"]) == 2
    assert capsys.readouterr().err == (
        "mrb: error: task Small-T2T of the results: no task matches 'Small-T2T'. See `mrb tasks` for the catalogue. "
        "(a task of your own needs its folder: --task-dir)\n"
    )


def test_a_composite_task_at_each_depth_equals_its_separate_runs(tmp_path):
    root = tmp_path / "tasks"
    combo_task(root)
    rows = mrb.evaluate("random", "Combo", task_dirs=[root], quiet=True, depths=[1, 2, 10])
    for depth in (1, 2, 10):
        (expected,) = separate_run(depth, "Combo", task_dirs=[root])
        (row,) = rows[rows["depth"] == depth].to_dict("records")
        assert {c: row[c] for c in COMPARED} == {c: expected[c] for c in COMPARED}, depth
