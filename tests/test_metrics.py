"""MRB's ranking + ir_measures pipeline against independent implementations with trec_eval semantics."""

import math
import random

import numpy as np
import pandas as pd
import pytest

from mrb.metrics import MEASURE_COLUMNS, judged_queries, per_query_measures, per_query_table, run_frame, strict_ranking


def reference_ndcg(ranked: list[str], labels: dict[str, int], k: int = 10) -> float:
    """nDCG@k as trec_eval computes it: raw graded gain, log2 discount, ideal over all judged documents."""
    dcg = sum(labels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if labels.get(d, 0) > 0)
    ideal = sorted((g for g in labels.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def reference_rr(ranked: list[str], labels: dict[str, int], k: int = 10) -> float:
    """Reciprocal rank of the first document of label ≥ 1 in the top k, else 0."""
    return next((1 / (i + 1) for i, d in enumerate(ranked[:k]) if labels.get(d, 0) > 0), 0.0)


def reference_recall(ranked: list[str], labels: dict[str, int], k: int) -> float:
    """Relevant (label ≥ 1) documents in the top k over all relevant documents of the query (0 without any)."""
    relevant = {d for d, g in labels.items() if g > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def reference_judged(ranked: list[str], labels: dict[str, int], k: int = 10) -> float:
    """Judged documents (any label, 0 included) among the top k, over the number retrieved up to k."""
    top = ranked[:k]
    return sum(d in labels for d in top) / len(top) if top else 0.0


def reference_order(cands: list[tuple[str, int, float]]) -> list[str]:
    """Sort (doc id, first-stage rank, score) by score desc, then first-stage rank, then doc id."""
    return [d for d, _, _ in sorted(cands, key=lambda c: (-c[2], c[1], c[0]))]


def frame(qrels: dict[str, dict[str, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(q, d, r) for q, docs in qrels.items() for d, r in docs.items()], columns=["query_id", "doc_id", "relevance"]
    )


def random_instance(rng: random.Random):
    qrels, rows = {}, []
    for q in range(rng.randint(1, 30)):
        qid = f"q{q}"
        docs = [f"d{rng.randint(0, 60)}" for _ in range(rng.randint(1, 25))]
        docs = list(dict.fromkeys(docs))
        judged = rng.sample(docs + [f"x{q}_{i}" for i in range(3)], k=min(len(docs), rng.randint(1, 8)))
        qrels[qid] = {d: rng.choice([0, 1, 1, 2, 3]) for d in judged}
        if rng.random() < 0.15:
            continue  # a judged query missing from the run: must count 0
        for rank, d in enumerate(docs, start=1):
            rows.append((qid, d, rank, float(rng.choice([0.0, 0.5, 1.0, rng.random()]))))  # many ties
    return qrels, pd.DataFrame(rows, columns=["query_id", "doc_id", "rank", "score"])


@pytest.mark.parametrize("seed", range(40))
def test_ndcg_matches_independent_implementation(seed):
    rng = random.Random(seed)
    qrels, cands = random_instance(rng)
    judged = judged_queries(frame(qrels))
    ranking = strict_ranking(cands, cands["score"].to_numpy())
    got = per_query_measures(["nDCG@10"], judged.qrels, run_frame(ranking))["nDCG@10"].to_dict()
    assert set(got) == set(qrels)
    for qid, labels in qrels.items():
        mine = cands[cands.query_id == qid]
        expected = reference_ndcg(reference_order(list(zip(mine.doc_id, mine["rank"], mine.score))), labels)
        assert got[qid] == pytest.approx(expected, abs=1e-9), qid
    assert judged.no_relevant == sorted(q for q, labels in qrels.items() if not any(v > 0 for v in labels.values()))


@pytest.mark.parametrize("seed", range(40))
def test_every_measure_matches_independent_implementations(seed):
    rng = random.Random(1000 + seed)
    qrels, cands = random_instance(rng)
    judged = judged_queries(frame(qrels))
    cands["score"] = [rng.choice([0.0, 1.0]) for _ in range(len(cands))]  # heavy ties
    ranking = strict_ranking(cands, cands["score"].to_numpy())
    first_stage = strict_ranking(cands, np.zeros(len(cands)))
    table = per_query_table("nDCG@10", judged.qrels, ranking, first_stage).set_index("query_id")
    assert table.columns.tolist() == ["value", "first_stage_value", *MEASURE_COLUMNS]
    assert sorted(table.index) == sorted(qrels)
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
        assert table.loc[qid].to_dict() == pytest.approx(expected, abs=1e-9), qid


def test_measures_by_hand_with_a_query_missing_from_the_run():
    qrels = {"q1": {"a": 0, "b": 2, "c": 1, "z": 1}, "q2": {"y": 1}}
    ranking = strict_ranking(
        pd.DataFrame(
            [("q1", d, r, 0.0) for r, d in enumerate("xyzabcdefghijk", 1)], columns=["query_id", "doc_id", "rank", "score"]
        ),
        np.zeros(14),
    )  # q1: x y z a b c d … (b at 5, c at 6, z at 3); q2 absent
    table = per_query_table("nDCG@10", frame(qrels), ranking, ranking).set_index("query_id")
    assert table.loc["q1", "RR@10"] == 1 / 3
    assert table.loc["q1", "R@10"] == 1.0 and table.loc["q1", "first_stage_R@100"] == 1.0
    assert table.loc["q1", "Judged@10"] == 0.4  # z, a, b, c among the top 10
    assert table.loc["q2"].tolist() == [0.0] * 6


def test_ties_are_broken_by_first_stage_rank_then_doc_id():
    cands = pd.DataFrame(
        [("q", "b", 2, 1.0), ("q", "a", 3, 1.0), ("q", "c", 1, 0.5), ("q", "z", 4, 1.0), ("q", "y", 4, 1.0)],
        columns=["query_id", "doc_id", "rank", "score"],
    )
    ranking = strict_ranking(cands, cands["score"].to_numpy())
    assert ranking["doc_id"].tolist() == ["b", "a", "y", "z", "c"]
    assert ranking["rank"].tolist() == [1, 2, 3, 4, 5]


def test_constant_scores_reproduce_first_stage_order():
    rng = random.Random(7)
    _, cands = random_instance(rng)
    shuffled = cands.sample(frac=1.0, random_state=3)
    ranking = strict_ranking(shuffled, np.full(len(shuffled), 0.25))
    for qid, group in ranking.groupby("query_id"):
        assert group["doc_id"].tolist() == cands[cands.query_id == qid].sort_values("rank")["doc_id"].tolist()


def test_judged_query_absent_from_run_counts_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 2}}
    run = pd.DataFrame({"query_id": ["q1"], "doc_id": ["a"], "score": [-1.0]})
    got = per_query_measures(["nDCG@10"], frame(qrels), run)["nDCG@10"].to_dict()
    assert got == {"q1": 1.0, "q2": 0.0}


def test_unscored_rows_take_the_next_float32_below_the_row_above_even_at_the_top():
    """A query with no row at or above the depth (every score NaN) still gets finite, strictly decreasing scores."""
    top = float(np.finfo(np.float32).max)
    below = float(np.nextafter(np.float32(top), np.float32(0)))
    ranking = pd.DataFrame(
        {
            "query_id": ["q1", "q1", "q2", "q2"],
            "doc_id": ["a", "b", "c", "d"],
            "rank": [1, 2, 1, 2],
            "score": [np.nan] * 2 + [0.5, np.nan],
        }
    )
    assert run_frame(ranking)["score"].tolist() == [top, below, 0.5, float(np.nextafter(np.float32(0.5), np.float32(0)))]
