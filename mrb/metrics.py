"""Strict ranking and per-query metrics through ir_measures (trec_eval semantics).

MRB orders candidates itself — score descending, then first-stage rank, then doc id — and
hands ir_measures (and writes to TREC files) strictly decreasing scores in that order, so
trec_eval's own tie-break (doc id, descending) never decides anything. See docs/metrics.md
for every convention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import ir_measures
import numpy as np
import pandas as pd

from mrb.errors import MRBError


def strict_ranking(candidates: pd.DataFrame, scores: np.ndarray, tail: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rank each query's candidates by (score desc, first-stage rank asc, doc id asc), then its `tail`.

    `candidates` has query_id, doc_id and rank (the first-stage rank); `scores` aligns with its rows.
    `tail` holds the candidates below the reranked depth, which follow in first-stage order with no
    score (NaN). Returns query_id, doc_id, score, first_stage_rank, rank (1-based).
    """
    frame = pd.DataFrame(
        {
            "query_id": candidates["query_id"].to_numpy(),
            "doc_id": candidates["doc_id"].to_numpy(),
            "score": np.asarray(scores, dtype=np.float64),
            "first_stage_rank": candidates["rank"].to_numpy(),
            "below": np.zeros(len(candidates), dtype=bool),
        }
    )
    if tail is not None and len(tail):
        below = pd.DataFrame({"query_id": tail["query_id"].to_numpy(), "doc_id": tail["doc_id"].to_numpy(),
                              "score": np.nan, "first_stage_rank": tail["rank"].to_numpy(), "below": True})
        frame = pd.concat([frame, below], ignore_index=True)
    frame = frame.sort_values(
        ["query_id", "below", "score", "first_stage_rank", "doc_id"], ascending=[True, True, False, True, True], kind="stable"
    ).drop(columns="below").reset_index(drop=True)
    frame["rank"] = frame.groupby("query_id", sort=False).cumcount() + 1
    return frame


def tie_free_scores(ranking: pd.DataFrame) -> np.ndarray:
    """Scores strictly decreasing in `ranking`'s order within each query, as 32-bit floats (returned as
    float64): trec_eval and pytrec_eval (so ir_measures) hold scores as float32 and break their ties
    by doc id, so only float32 values that differ carry MRB's order to them. Each is the reranker's
    score rounded to float32 (clamped to its range) unless that would tie with or pass the row above
    it; then it takes the next float32 below that row (an unscored row below the reranked depth too).
    """
    scores = np.clip(ranking["score"].to_numpy(dtype=np.float64), -_F32_MAX, _F32_MAX)
    keys = _f32_keys(np.where(np.isnan(scores), _F32_MAX, scores).astype(np.float32))
    keys[np.isnan(scores)] = np.iinfo(np.int64).max >> 1  # no score: one step below the row above
    position = ranking["rank"].to_numpy(dtype=np.int64) - 1
    # v_i = min(k_i, v_{i-1} - 1) within a query is v_i = cummin(k + i)_i - i
    lowered = pd.Series(keys + position).groupby(ranking["query_id"].to_numpy(), sort=False).cummin().to_numpy() - position
    if len(lowered) and lowered.min() < _f32_keys(np.array([-_F32_MAX], np.float32))[0]:
        raise MRBError("scores too close to the lower float32 limit to be made strictly decreasing")
    return _f32_from_keys(lowered).astype(np.float64)


_F32_MAX = float(np.finfo(np.float32).max)


def _f32_keys(values: np.ndarray) -> np.ndarray:
    """float32 values as int64 keys in the same order, one apart for neighbouring floats (−0 and +0 share 0)."""
    bits = values.view(np.int32).astype(np.int64)
    return np.where(bits >= 0, bits, -(bits & 0x7FFFFFFF))


def _f32_from_keys(keys: np.ndarray) -> np.ndarray:
    bits = np.where(keys >= 0, keys, (-keys) | 0x80000000).astype(np.uint32)
    return bits.view(np.float32)


def run_from_ranking(ranking: pd.DataFrame) -> dict[str, dict[str, float]]:
    """The run `ranking` stands for, with its tie-free scores: what MRB writes to a TREC file and evaluates."""
    run: dict[str, dict[str, float]] = {}
    for qid, did, score in zip(ranking["query_id"].tolist(), ranking["doc_id"].tolist(), tie_free_scores(ranking).tolist()):
        run.setdefault(qid, {})[did] = score
    return run


NoRelevant = Literal["zero", "drop"]
NO_RELEVANT_RULES: dict[str, str] = {
    "zero": "count 0 (as pytrec_eval, ir_measures, MTEB and BEIR count them)",
    "drop": "set aside and counted (no_relevant: drop)",
}


@dataclass(frozen=True)
class Judged:
    """The qrels a task is scored on, and the judged queries without any relevant document."""

    qrels: dict[str, dict[str, int]]  # the evaluated queries
    no_relevant: list[str]  # judged queries with no document of label > 0 (scored 0, or dropped)


def judged_queries(qrels: dict[str, dict[str, int]], no_relevant: NoRelevant = "zero") -> Judged:
    """The evaluated queries: every judged query (`zero`: one without a relevant document scores 0 whatever
    the ranking), or only those with a document of label > 0 (`drop`)."""
    without = sorted(q for q, docs in qrels.items() if not any(rel > 0 for rel in docs.values()))
    if no_relevant == "drop":
        qrels = {q: docs for q, docs in qrels.items() if q not in set(without)}
    return Judged(qrels, without)


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
