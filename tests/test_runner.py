"""End-to-end runs on a small catalogue: values, outputs, reports and reranker faults."""

import logging
import math

import pandas as pd
import pytest

import mrb
from mrb.errors import MRBError
from mrb.report import render_markdown
from mrb.results import read_leaderboard
from tests.packs import small_text_task

# Small-T2T by hand. q1 candidates (first-stage order): d1 (label 0), d0 (2), d2 (1), d3 (unjudged).
IDCG_Q1 = 2 + 1 / math.log2(3)
FIRST_STAGE_Q1 = (2 / math.log2(3) + 1 / math.log2(4)) / IDCG_Q1
FIRST_STAGE_Q2 = 1 / math.log2(3)  # d3 (label 1) at rank 2


@pytest.fixture
def tasks_dir(tmp_path):
    small_text_task(tmp_path / "tasks")
    return tmp_path / "tasks"


def run(model, tasks_dir, **kwargs):
    return mrb.evaluate(model, "all", task_dirs=[tasks_dir], quiet=True, **kwargs)


def test_first_stage_and_constant_scorer_equal_first_stage_column(tasks_dir):
    for model in ("first-stage", lambda pairs: [0.0] * len(pairs)):
        row = run(model, tasks_dir).iloc[0]
        assert row["first_stage_value"] == pytest.approx((FIRST_STAGE_Q1 + FIRST_STAGE_Q2) / 2, abs=1e-12)
        assert row["value"] == row["first_stage_value"]


def test_oracle_reaches_the_ceiling(tasks_dir):
    row = run("oracle", tasks_dir).iloc[0]
    assert row["value"] == pytest.approx(1.0, abs=1e-12)  # every relevant document is in the lists
    assert (row["status"], row["n_queries"], row["type"], row["category"]) == ("ok", 2, "T→T", "single-modal")


def test_outputs_and_report_from_parquet_alone(tasks_dir, tmp_path):
    out = tmp_path / "results"
    run("oracle", tasks_dir, output_dir=out)
    run("first-stage", tasks_dir, output_dir=out)
    per_query = pd.read_parquet(out / "oracle" / "Small-T2T.parquet")
    assert per_query.to_dict("list") == {
        "query_id": ["q1", "q2"],
        "part": ["", ""],
        "metric": ["nDCG@10"] * 2,
        "value": [1.0, 1.0],
        "first_stage_value": [pytest.approx(FIRST_STAGE_Q1), pytest.approx(FIRST_STAGE_Q2)],
        # by hand: q1 ranks d0 (2), d2 (1), d1 (0), d3 (unjudged); q2 ranks d3 (1), d0 (unjudged)
        "RR@10": [1.0, 1.0],
        "R@10": [1.0, 1.0],
        "Judged@10": [0.75, 0.5],
        "first_stage_R@100": [1.0, 1.0],
    }
    # scores strictly decreasing as float32 (what trec_eval holds): a tie takes the next float32 below
    assert (out / "oracle" / "Small-T2T.trec").read_text().splitlines() == [
        "q1 Q0 d0 1 2.0 oracle",
        "q1 Q0 d2 2 1.0 oracle",
        "q1 Q0 d1 3 0.0 oracle",
        "q1 Q0 d3 4 -1e-45 oracle",
        "q2 Q0 d3 1 1.0 oracle",
        "q2 Q0 d0 2 0.0 oracle",
    ]
    board = read_leaderboard(out)
    assert sorted(board["model"]) == ["first-stage", "oracle"]
    text = render_markdown(board)
    fs = f"{100 * (FIRST_STAGE_Q1 + FIRST_STAGE_Q2) / 2:.2f}"
    assert "| oracle      | **100.00** |       **100.00** | **100.00** |    **+34.97** |" in text
    assert f"| first stage |      {fs} |            {fs} |      {fs} |         +0.00 |" in text
    # re-running a model replaces its rows instead of adding more
    run("oracle", tasks_dir, output_dir=out)
    assert len(read_leaderboard(out)) == 2


def test_unsupported_task_is_empty_never_zero(tasks_dir, tmp_path):
    def images_only(pairs):
        return [1.0] * len(pairs)

    images_only.query_sides = {"i"}
    row = run(images_only, tasks_dir).iloc[0]
    assert row["status"] == "unsupported" and pd.isna(row["value"]) and row["n_queries"] == 0
    small_text_task(tasks_dir, "Other-T2T")
    out = tmp_path / "r"
    run("oracle", tasks_dir, output_dir=out)
    run(images_only, tasks_dir, output_dir=out)
    text = render_markdown(read_leaderboard(out))
    assert "| images_only |          ✗ |                ✗ |          ✗ |             ✗ |" in text  # unsupported, never 0


def test_wrong_number_of_scores(tasks_dir):
    with pytest.raises(MRBError) as err:
        run(lambda pairs: [0.0] * (len(pairs) - 1), tasks_dir)
    assert str(err.value) == "task Small-T2T: reranker '<lambda>' returned 5 scores for a batch of 6 pairs (first query 'q1')"


def test_nan_score_names_query_and_document(tasks_dir):
    def nan_on_d2(pairs):
        return [float("nan") if p.document.id == "d2" else 0.0 for p in pairs]

    with pytest.raises(MRBError) as err:
        run(nan_on_d2, tasks_dir, batch_size=2)
    assert str(err.value) == "task Small-T2T: reranker 'nan_on_d2' returned nan for query 'q1', document 'd2'"


def test_scores_do_not_depend_on_batch_size(tasks_dir):
    values = {bs: run("bm25", tasks_dir, batch_size=bs)["value"].iloc[0] for bs in (1, 3, 64)}
    assert len(set(values.values())) == 1


def test_unknown_model_suggests_presets():
    with pytest.raises(MRBError) as err:
        mrb.get_reranker("orakle")
    assert str(err.value).startswith("unknown model 'orakle'. Did you mean: oracle? Known: ")


def test_ignore_identical_ids(tmp_path, caplog):
    from mrb.data import Record
    from tests.packs import write_task

    write_task(
        tmp_path,
        "Self-T2T",
        queries=[Record("a", "x")],
        documents=[Record("a", "x"), Record("b", "y")],
        candidates=[("a", "a", 1, 1.0), ("a", "b", 2, 0.5)],
        qrels=[("a", "b", 1)],
        extra_yaml="ignore_identical_ids: true\n",
    )
    with caplog.at_level(logging.INFO, logger="mrb.evaluation"):
        row = mrb.evaluate("first-stage", "all", task_dirs=[tmp_path], quiet=True).iloc[0]
    assert row["value"] == 1.0  # the query's own document is removed before ranking
    assert "Self-T2T: 1 candidates with the query's own id dropped (ignore_identical_ids)" in caplog.messages


class Named:
    """A reranker object with a given name (scores: the first stage's order)."""

    def __init__(self, name):
        self.name = name

    def score(self, pairs):
        return [0.0] * len(pairs)


def test_two_models_never_share_a_results_folder(tasks_dir, tmp_path):
    out = tmp_path / "results"
    mrb.evaluate(Named("org/model"), "all", task_dirs=[tasks_dir], output_dir=out, quiet=True)
    with pytest.raises(MRBError) as err:
        mrb.evaluate(Named("org model"), "all", task_dirs=[tasks_dir], output_dir=out, quiet=True)
    assert str(err.value) == (
        f"results folder {out}: model 'org model' would write to org__model/, which holds the results of "
        "model 'org/model'; rename the model or use another output folder"
    )
    mrb.evaluate(Named("org/model"), "all", task_dirs=[tasks_dir], output_dir=out, quiet=True)  # the same model may rerun


def test_composite_task_scores_the_mean_of_its_parts(tmp_path):
    from tests.packs import combo_task

    root = tmp_path / "tasks"
    combo_task(root)
    row = mrb.evaluate("first-stage", "Combo", task_dirs=[root], quiet=True).iloc[0]
    part_a = (FIRST_STAGE_Q1 + FIRST_STAGE_Q2) / 2
    part_b = 1 / math.log2(3)
    assert row["value"] == pytest.approx((part_a + part_b) / 2, abs=1e-12)  # mean of parts, not of queries
    assert row["n_queries"] == 3
    out = tmp_path / "r"
    mrb.evaluate("oracle", "Combo", task_dirs=[root], quiet=True, output_dir=out)
    assert pd.read_parquet(out / "oracle" / "Combo.parquet")["query_id"].tolist() == ["Combo-a/q1", "Combo-a/q2", "Combo-b/q1"]


def test_adapter_name_without_checkpoint_says_what_is_missing():
    with pytest.raises(MRBError) as err:
        mrb.get_reranker("qwen-vl-yes-no")
    assert str(err.value) == (
        "QwenVLYesNo needs checkpoint (give a checkpoint folder or hub id as --model and this adapter as --adapter)"
    )


def test_options_are_checked_against_the_adapter_and_the_bases_it_passes_them_to():
    with pytest.raises(MRBError) as err:
        mrb.get_reranker("qwen-vl-yes-no", checkpoint="/nowhere", max_pixel=10)
    assert str(err.value) == (
        "QwenVLYesNo does not take option(s) max_pixel; it takes: checkpoint, min_pixels, max_pixels, prefix_sharing, "
        "vision_cache_mb, revision, device, dtype, attn_implementation, max_length, trust_remote_code"
    )


def test_a_model_that_gives_every_candidate_one_score_is_marked_no_signal(tasks_dir):
    constant = run(lambda pairs: [0.5] * len(pairs), tasks_dir).iloc[0]
    assert bool(constant["no_signal"]) and constant["value"] == constant["first_stage_value"]
    assert not bool(run("oracle", tasks_dir).iloc[0]["no_signal"])


@pytest.mark.parametrize(
    ("sides", "message"),
    [
        (
            {"image"},
            "reranker 'typo': query_sides holds unknown side(s) 'image'; sides are 't' (text), 'i' (an image or a "
            "visual document) and 'it' (image and text)",
        ),
        ("it", "reranker 'typo': query_sides must be a set of sides (of ['i', 'it', 't']), not 'it'"),
    ],
    ids=["unknown", "string"],
)
def test_a_reranker_declaring_sides_wrongly_is_refused(tasks_dir, sides, message):
    class Typo(mrb.Reranker):
        name = "typo"
        query_sides = sides

        def score(self, pairs):
            return [0.0] * len(pairs)

    def typo(pairs):
        return [0.0] * len(pairs)

    typo.query_sides = sides
    for model in (Typo(), typo):
        with pytest.raises(MRBError) as err:
            run(model, tasks_dir)
        assert str(err.value) == message
