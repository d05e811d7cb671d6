"""Strict ranking and per-query metrics through ir_measures (trec_eval semantics).

MRB orders candidates itself — score descending, then first-stage rank, then doc id — and
hands ir_measures (and writes to TREC files) strictly decreasing scores in that order, so
trec_eval's own tie-break (doc id, descending) never decides anything. See docs/metrics.md
for every convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import ir_measures
import numpy as np
import pandas as pd

from mrb.errors import MRBError
from mrb.tasks import NoRelevant


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
        below = pd.DataFrame(
            {
                "query_id": tail["query_id"].to_numpy(),
                "doc_id": tail["doc_id"].to_numpy(),
                "score": np.nan,
                "first_stage_rank": tail["rank"].to_numpy(),
                "below": True,
            }
        )
        frame = pd.concat([frame, below], ignore_index=True)
    frame = (
        frame.sort_values(
            ["query_id", "below", "score", "first_stage_rank", "doc_id"], ascending=[True, True, False, True, True], kind="stable"
        )
        .drop(columns="below")
        .reset_index(drop=True)
    )
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
    # no score: the float32 maximum, which the cummin lowers to one step below the row above (if there is one)
    keys = _f32_keys(np.where(np.isnan(scores), _F32_MAX, scores).astype(np.float32))
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


def run_frame(ranking: pd.DataFrame) -> pd.DataFrame:
    """The run `ranking` stands for (query_id, doc_id, score), with its tie-free scores: what MRB writes to a
    TREC file and evaluates."""
    return pd.DataFrame(
        {"query_id": ranking["query_id"].to_numpy(), "doc_id": ranking["doc_id"].to_numpy(), "score": tie_free_scores(ranking)}
    )


NO_RELEVANT_RULES: dict[str, str] = {
    "zero": "count 0 (as pytrec_eval, ir_measures, MTEB and BEIR count them)",
    "drop": "set aside and counted (no_relevant: drop)",
}


@dataclass(frozen=True)
class Judged:
    """The qrels a task is scored on (query_id, doc_id, relevance), and the judged queries without any relevant document."""

    qrels: pd.DataFrame  # the evaluated queries' judgements
    no_relevant: list[str]  # judged queries with no document of label > 0 (scored 0, or dropped)


def judged_queries(qrels: pd.DataFrame, no_relevant: NoRelevant = "zero") -> Judged:
    """The evaluated queries: every judged query (`zero`: one without a relevant document scores 0 whatever
    the ranking), or only those with a document of label > 0 (`drop`)."""
    best = qrels.groupby("query_id", sort=False)["relevance"].max()
    without = sorted(best.index[best <= 0])
    if no_relevant == "drop":
        qrels = qrels[~qrels["query_id"].isin(without)]
    return Judged(qrels[["query_id", "doc_id", "relevance"]].reset_index(drop=True), without)


def per_query_measures(measures: list[str], qrels: pd.DataFrame, run: pd.DataFrame) -> pd.DataFrame:
    """One row per query of `qrels` (in their order), one column per measure, through ir_measures on the
    frames; ir_measures scores a judged query absent from the run 0."""
    parsed = {ir_measures.parse_measure(m): m for m in measures}
    values = pd.DataFrame(
        [(m.query_id, parsed[m.measure], float(m.value)) for m in ir_measures.iter_calc(list(parsed), qrels, run)],
        columns=["query_id", "measure", "value"],
    ).pivot(index="query_id", columns="measure", values="value")
    queries = qrels["query_id"].unique()
    left_out = sorted(set(queries) - set(values.index))
    if left_out:
        raise MRBError(f"ir_measures returned no value for judged query {left_out[0]!r}; MRB cannot report a mean without it")
    return values.reindex(index=queries, columns=measures)


# Measures kept per query beside the task's main metric: of the reranked list, and of the
# first stage's (its recall at 100 is the ceiling of what any reranker of its lists can find).
RERANKED_MEASURES = ("RR@10", "R@10", "Judged@10")
FIRST_STAGE_MEASURES = ("R@100",)
FIRST_STAGE_PREFIX = "first_stage_"
# The per-query columns beyond query_id, value and first_stage_value, in table order.
MEASURE_COLUMNS = [*RERANKED_MEASURES, *(FIRST_STAGE_PREFIX + m for m in FIRST_STAGE_MEASURES)]


def per_query_table(metric: str, qrels: pd.DataFrame, ranking: pd.DataFrame, first_stage: pd.DataFrame) -> pd.DataFrame:
    """One row per judged query: query_id, value (the main metric), first_stage_value, then
    RR@10, R@10, Judged@10 of the reranked list and first_stage_R@100."""
    mine = per_query_measures([metric, *RERANKED_MEASURES], qrels, run_frame(ranking))
    base = per_query_measures([metric, *FIRST_STAGE_MEASURES], qrels, run_frame(first_stage))
    table = pd.DataFrame(
        {"query_id": mine.index.to_numpy(), "value": mine[metric].to_numpy(), "first_stage_value": base[metric].to_numpy()}
    )
    for m in RERANKED_MEASURES:
        table[m] = mine[m].to_numpy()
    for m in FIRST_STAGE_MEASURES:
        table[FIRST_STAGE_PREFIX + m] = base[m].to_numpy()
    return table
