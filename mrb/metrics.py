"""Strict ranking and per-query metrics through ir_measures (trec_eval semantics).

MRB orders candidates itself — score descending, then first-stage rank, then doc id — and
hands ir_measures strictly decreasing scores, so trec_eval's own tie-break (doc id,
descending) never decides anything.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    for qid, did, rank in zip(ranking["query_id"], ranking["doc_id"], ranking["rank"]):
        run.setdefault(qid, {})[did] = float(-rank)
    return run


@dataclass(frozen=True)
class Judged:
    """The qrels a task is scored on, split into evaluable queries and the ones set aside."""

    qrels: dict[str, dict[str, int]]  # queries with at least one relevant document
    no_relevant: list[str]  # queries judged but with no relevant document (dropped, counted)


def judged_queries(qrels: dict[str, dict[str, int]]) -> Judged:
    keep = {q: docs for q, docs in qrels.items() if any(rel > 0 for rel in docs.values())}
    return Judged(keep, sorted(set(qrels) - set(keep)))


def per_query(measure: str, qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """The measure for every query of `qrels`; a query absent from the run counts 0."""
    parsed = ir_measures.parse_measure(measure)
    values = {m.query_id: float(m.value) for m in ir_measures.iter_calc([parsed], qrels, run)}
    return {qid: values.get(qid, 0.0) for qid in qrels}
