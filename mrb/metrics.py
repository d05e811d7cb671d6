"""Strict ranking and per-query metrics through ir_measures (trec_eval semantics).

MRB orders candidates itself — score descending, then first-stage rank, then doc id — and
hands ir_measures strictly decreasing scores, so trec_eval's own tie-break (doc id,
descending) never decides anything. See docs/metrics.md for every convention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ir_measures
import numpy as np
import pandas as pd


def strict_ranking(candidates: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    """Rank each query's candidates by (score desc, first-stage rank asc, doc id asc).

    `candidates` has query_id, doc_id and rank (the first-stage rank); `scores` aligns with
    its rows. Returns query_id, doc_id, score, first_stage_rank, rank (1-based).
    """
    frame = pd.DataFrame(
        {
            "query_id": candidates["query_id"].to_numpy(),
            "doc_id": candidates["doc_id"].to_numpy(),
            "score": np.asarray(scores, dtype=np.float64),
            "first_stage_rank": candidates["rank"].to_numpy(),
        }
    )
    frame = frame.sort_values(
        ["query_id", "score", "first_stage_rank", "doc_id"], ascending=[True, False, True, True], kind="stable"
    ).reset_index(drop=True)
    frame["rank"] = frame.groupby("query_id", sort=False).cumcount() + 1
    return frame


def run_from_ranking(ranking: pd.DataFrame) -> dict[str, dict[str, float]]:
    """A run whose scores encode the strict rank (strictly decreasing within each query)."""
    run: dict[str, dict[str, float]] = {}
    for qid, did, rank in zip(ranking["query_id"].tolist(), ranking["doc_id"].tolist(), ranking["rank"].tolist()):
        run.setdefault(qid, {})[did] = float(-rank)
    return run


@dataclass(frozen=True)
class Judged:
    """The qrels a task is scored on, split into evaluable queries and the ones set aside."""

    qrels: dict[str, dict[str, int]]  # queries with at least one relevant document
    no_relevant: list[str]  # queries judged but with no relevant document (dropped, counted)


def judged_queries(qrels: dict[str, dict[str, int]]) -> Judged:
    """Set aside the queries without any document of label > 0 (they would score 0 whatever the ranking)."""
    keep = {q: docs for q, docs in qrels.items() if any(rel > 0 for rel in docs.values())}
    return Judged(keep, sorted(set(qrels) - set(keep)))


def per_query_measures(
    measures: list[str], qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """Measure → {query → value} for every query of `qrels`; a query absent from the run counts 0."""
    parsed = [ir_measures.parse_measure(m) for m in measures]
    got: dict[Any, dict[str, float]] = {p: {} for p in parsed}
    for metric in ir_measures.iter_calc(list(got), qrels, run):
        got[metric.measure][metric.query_id] = float(metric.value)
    return {m: {qid: got[p].get(qid, 0.0) for qid in qrels} for m, p in zip(measures, parsed)}


def per_query(measure: str, qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """The measure for every query of `qrels`; a query absent from the run counts 0."""
    return per_query_measures([measure], qrels, run)[measure]


# Measures kept per query beside the task's main metric: of the reranked list, and of the
# first stage's (its recall at 100 is the ceiling of what any reranker of its lists can find).
RERANKED_MEASURES = ("RR@10", "R@10", "Judged@10")
FIRST_STAGE_MEASURES = ("R@100",)
FIRST_STAGE_PREFIX = "first_stage_"
# The per-query columns beyond query_id, value and first_stage_value, in table order.
MEASURE_COLUMNS = [*RERANKED_MEASURES, *(FIRST_STAGE_PREFIX + m for m in FIRST_STAGE_MEASURES)]


def per_query_table(metric: str, qrels: dict[str, dict[str, int]], ranking: pd.DataFrame, first_stage: pd.DataFrame) -> pd.DataFrame:
    """One row per judged query: query_id, value (the main metric), first_stage_value, then
    RR@10, R@10, Judged@10 of the reranked list and first_stage_R@100."""
    mine = per_query_measures([metric, *RERANKED_MEASURES], qrels, run_from_ranking(ranking))
    base = per_query_measures([metric, *FIRST_STAGE_MEASURES], qrels, run_from_ranking(first_stage))
    columns = {"query_id": list(qrels), "value": list(mine[metric].values()), "first_stage_value": list(base[metric].values())}
    columns.update({m: list(mine[m].values()) for m in RERANKED_MEASURES})
    columns.update({FIRST_STAGE_PREFIX + m: list(base[m].values()) for m in FIRST_STAGE_MEASURES})
    return pd.DataFrame(columns)
