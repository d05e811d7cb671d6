"""The bundled mini suite: its shape, and runs over it against independent computations."""

import math

import pandas as pd
import pytest

import mrb
from mrb.data import read_pack
from mrb.metrics import MEASURE_COLUMNS
from mrb.tasks import load_tasks
from tests.packs import candidate_lists, qrels_dict
from tests.test_metrics import reference_ndcg

MINI = load_tasks("mini")


def test_mini_covers_the_required_types_and_sizes():
    assert {t.type.value for t in MINI} >= {"t2t", "t2i", "i2t", "it2t"}
    for task in MINI:
        pack = read_pack(task.pack_path())
        lists = candidate_lists(pack)
        qrels = qrels_dict(pack)
        assert len(pack.queries) >= 12 and len(pack.documents) >= 40, task.name
        assert set(pack.qrels["relevance"]) == {0, 1, 2}, task.name
        assert task.depth == 20 and all(len(docs) == 20 for docs in lists.values()), task.name
        # realistic first-stage mistakes
        assert any(qrels[q].get(lists[q][0], 0) == 0 for q in lists), task.name
        labels = {q: [qrels[q].get(d, 0) for d in lists[q]] for q in lists}
        assert sum(lab != sorted(lab, reverse=True) for lab in labels.values()) >= len(lists) // 2, task.name
        assert sum(any(r > 0 and d not in lists[q] for d, r in qrels[q].items()) for q in lists) >= 2, task.name
        tied = pack.candidates.groupby("query_id")["score"].apply(lambda s: s.duplicated().any())
        assert tied.sum() >= 2, task.name


def ceiling(pack) -> float:
    """Best nDCG@10 reachable by reordering each candidate list: sort candidates by label."""
    qrels = qrels_dict(pack)
    lists = candidate_lists(pack)
    values = []
    for qid, labels in qrels.items():
        if not any(v > 0 for v in labels.values()):
            continue
        best = sorted(lists.get(qid, []), key=lambda d: -labels.get(d, 0))
        values.append(reference_ndcg(best, labels))
    return sum(values) / len(values)


def first_stage(pack) -> float:
    qrels = qrels_dict(pack)
    lists = candidate_lists(pack)
    values = [reference_ndcg(lists.get(q, []), labels) for q, labels in qrels.items() if any(v > 0 for v in labels.values())]
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def boards():
    return {m: mrb.evaluate(m, "mini", quiet=True).set_index("task") for m in ("oracle", "first-stage")}


@pytest.mark.parametrize("task", MINI, ids=lambda t: t.name)
def test_oracle_reaches_the_independent_ceiling(boards, task):
    pack = read_pack(task.pack_path())
    assert boards["oracle"].at[task.name, "value"] == pytest.approx(ceiling(pack), abs=1e-9)
    assert boards["oracle"].at[task.name, "value"] < 1.0  # some relevant documents are missing from the lists


@pytest.mark.parametrize("task", MINI, ids=lambda t: t.name)
def test_first_stage_equals_first_stage_column_and_independent_value(boards, task):
    pack = read_pack(task.pack_path())
    row = boards["first-stage"].loc[task.name]
    assert row["value"] == row["first_stage_value"]
    assert row["value"] == pytest.approx(first_stage(pack), abs=1e-9)
    assert boards["oracle"].at[task.name, "first_stage_value"] == row["value"]
    assert row["n_queries"] == len(pack.queries)


def test_bm25_on_mini_text_task():
    board = mrb.evaluate("bm25", "mini", quiet=True).set_index("task")
    assert board.at["MiniFacts-T2T", "status"] == "ok"
    assert board.at["MiniFacts-T2T", "value"] == pytest.approx(0.8223131, abs=1e-7)  # the figure in the README's notes
    assert set(board.loc[board["status"] == "unsupported"].index) == {t.name for t in MINI} - {"MiniFacts-T2T"}
    assert math.isnan(board.at["MiniPhotos-T2I", "value"])


def test_constant_scorer_equals_the_first_stage_on_every_measure(boards):
    constant = mrb.evaluate(lambda pairs: [0.5] * len(pairs), "mini", quiet=True).set_index("task")
    columns = ["value", "first_stage_value", "ci_low", "ci_high", *MEASURE_COLUMNS]
    pd.testing.assert_frame_equal(constant[columns], boards["first-stage"][columns])
    assert (constant["value"] == constant["first_stage_value"]).all()
