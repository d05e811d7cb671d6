"""TaskEvaluator, the one place that turns a pack and scores into values: against MRB 0.1's numbers on
every mini task, and against independent implementations on every randomised metric case."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mrb.data import Pack, Pair, Record, read_pack
from mrb.evaluation import TaskEvaluator
from mrb.rerankers.baselines import Oracle, RandomScores
from mrb.tasks import TaskSpec, load_tasks
from tests.test_metrics import random_instance, reference_judged, reference_ndcg, reference_order, reference_recall, reference_rr

# `mrb.evaluate(model, "mini")` at commit 5a88122 (MRB 0.1, before TaskEvaluator existed); no mini task has a
# judged query without a relevant document, so the change of that rule leaves these values as they were.
MRB_0_1 = {
    "MiniFacts-T2T": {"first-stage": 0.8312448979158119, "oracle": 0.9175378785475126, "random": 0.17453485724903917},
    "MiniPhotos-T2I": {"first-stage": 0.7308909031188486, "oracle": 0.886725524453336, "random": 0.25756400885561925},
    "MiniPhotos-I2T": {"first-stage": 0.7459286759462864, "oracle": 0.8781610970046321, "random": 0.30249697203151943},
    "MiniPhotoQA-IT2T": {"first-stage": 0.7638163145345821, "oracle": 0.9075234416789836, "random": 0.18016980764590695},
    "MiniPhotos-I2I": {"first-stage": 0.6430392483377116, "oracle": 0.8774829374451918, "random": 0.2789493213785662},
}


@pytest.mark.parametrize("task", load_tasks("mini"), ids=lambda t: t.name)
def test_the_evaluator_gives_mrb_0_1s_values_on_every_mini_task(task):
    pack = read_pack(task.pack_path())
    evaluator = TaskEvaluator(task, pack)
    pairs = [
        Pair(task.instruction, pack.queries[q], pack.documents[d])
        for q, d in zip(evaluator.candidates["query_id"], evaluator.candidates["doc_id"])
    ]
    oracle, random_scores = Oracle(), RandomScores(seed=0)
    oracle.start_task(task, pack)
    values = {
        "first-stage": evaluator.first_stage().value,
        "oracle": evaluator.evaluate(np.array(oracle.score(pairs))).value,
        "random": evaluator.evaluate(np.array(random_scores.score(pairs))).value,
    }
    assert values == MRB_0_1[task.name]
    assert evaluator.first_stage().first_stage_value == MRB_0_1[task.name]["first-stage"]


def instance_pack(qrels: dict[str, dict[str, int]], candidates: pd.DataFrame) -> tuple[TaskSpec, Pack]:
    """A text task and its in-memory pack over a random instance of tests/test_metrics.py."""
    queries = {q: Record(q, q) for q in sorted(set(qrels) | set(candidates["query_id"]))}
    documents = {d: Record(d, d) for d in sorted(set(candidates["doc_id"]))}
    rows = [(q, d, r) for q, docs in qrels.items() for d, r in docs.items()]
    depth = int(candidates["rank"].max())
    task = TaskSpec(name="Random", type="t2t", instruction="find", depth=depth, pack="p")
    pack = Pack(
        Path("p"),
        queries,
        documents,
        candidates,
        pd.DataFrame(rows, columns=["query_id", "doc_id", "relevance"]),
        {"depth": depth},
    )
    return task, pack


@pytest.mark.parametrize("seed", range(40))
def test_the_evaluator_matches_independent_implementations_on_random_cases(seed):
    rng = random.Random(2000 + seed)
    qrels, cands = random_instance(rng)
    if cands.empty:
        pytest.skip("an instance without candidates is refused, as tests/test_trust.py checks")
    task, pack = instance_pack(qrels, cands)
    evaluator = TaskEvaluator(task, pack)
    scores = evaluator.evaluate(evaluator.candidates["score"].to_numpy())
    table = scores.per_query.set_index("query_id")
    assert sorted(table.index) == sorted(qrels)
    ndcgs = []
    for qid, labels in qrels.items():
        mine = cands[cands.query_id == qid]
        order = reference_order(list(zip(mine.doc_id, mine["rank"], mine.score)))
        first = mine.sort_values("rank")["doc_id"].tolist()
        expected = {
            "value": reference_ndcg(order, labels),
            "first_stage_value": reference_ndcg(first, labels),
            "RR@10": reference_rr(order, labels),
            "R@10": reference_recall(order, labels, 10),
            "Judged@10": reference_judged(order, labels),
            "first_stage_R@100": reference_recall(first, labels, 100),
        }
        assert table.loc[qid].drop("part").to_dict() == pytest.approx(expected, abs=1e-9), qid
        ndcgs.append(expected["value"])
    assert scores.value == pytest.approx(np.mean(ndcgs), abs=1e-12)  # a plain task's value: the mean over its queries


@pytest.mark.parametrize("task", load_tasks("mini"), ids=lambda t: t.name)
def test_an_evaluator_cut_to_a_shallower_depth_is_the_evaluator_of_that_depth(task):
    pack = read_pack(task.pack_path())
    deep = TaskEvaluator(task, pack)
    for depth in (1, 5, task.depth):
        cut, fresh = deep.at_depth(depth), TaskEvaluator(task.model_copy(update={"depth": depth}), pack)
        key = ["query_id", "doc_id"]
        for name in ("candidates", "below_depth"):
            a, b = (getattr(e, name).sort_values(key).reset_index(drop=True) for e in (cut, fresh))
            pd.testing.assert_frame_equal(a, b)
        scores = np.random.default_rng(depth).random(len(cut.candidates))
        got, want = cut.evaluate(scores), fresh.evaluate(scores)
        assert (got.value, got.first_stage_value, got.depth) == (want.value, want.first_stage_value, depth)
        pd.testing.assert_frame_equal(got.per_query, want.per_query)
