"""Run a reranker over tasks: pairs in batches → scores → strict ranking → per-query metrics."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mrb.data import Pack, Pair, read_pack
from mrb.errors import MRBError
from mrb.metrics import judged_queries, per_query_table, strict_ranking
from mrb.rerankers.base import Reranker
from mrb.tasks import TaskSpec

log = logging.getLogger(__name__)


@dataclass
class TaskResult:
    """The outcome of one task for one reranker."""

    task: TaskSpec
    status: str  # "ok" or "unsupported"
    pack_hash: str
    per_query: pd.DataFrame | None = None  # query_id, value, first_stage_value
    ranking: pd.DataFrame | None = None  # query_id, doc_id, score, first_stage_rank, rank
    n_no_qrels: int = 0  # candidate-list queries without judgements (not scorable)
    n_no_relevant: int = 0  # judged queries without any relevant document
    n_identical_ids: int = 0  # candidates dropped because doc id == query id
    seconds: float = 0.0
    parts: list[TaskResult] = field(default_factory=list)  # a composite task's part results

    def _mean(self, column: str) -> float | None:
        if self.per_query is None:
            return None
        if self.parts:
            return self.task.aggregate({p.task.name: p._mean(column) for p in self.parts})
        return float(self.per_query[column].mean())

    @property
    def value(self) -> float | None:
        """The task's score: the mean over queries, or over parts for a composite task."""
        return self._mean("value")

    @property
    def first_stage_value(self) -> float | None:
        return self._mean("first_stage_value")


def pack_fingerprint(pack: Pack) -> str:
    """A short hash of the pack's file hashes, so results from different packs never mix unnoticed."""
    hashes = pack.manifest.get("sha256", {})
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]


def iter_batches(pairs: Sequence[Pair], batch_size: int) -> Iterator[tuple[int, Sequence[Pair]]]:
    for start in range(0, len(pairs), batch_size):
        yield start, pairs[start : start + batch_size]


def score_pairs(task: TaskSpec, reranker: Reranker, pairs: Sequence[Pair], batch_size: int, progress: Progress | None) -> np.ndarray:
    """Score every pair in batches, checking each batch's count and finiteness."""
    scores = np.empty(len(pairs), dtype=np.float64)
    bar = progress.add_task(task.name, total=len(pairs)) if progress else None
    for start, batch in iter_batches(pairs, batch_size):
        got = list(reranker.score(batch))
        if len(got) != len(batch):
            raise MRBError(
                f"task {task.name}: reranker {reranker.name!r} returned {len(got)} scores for a batch of "
                f"{len(batch)} pairs (first query {batch[0].query.id!r})"
            )
        for offset, (pair, value) in enumerate(zip(batch, got)):
            value = float(value)
            if not math.isfinite(value):
                raise MRBError(
                    f"task {task.name}: reranker {reranker.name!r} returned {value} for query {pair.query.id!r}, "
                    f"document {pair.document.id!r}"
                )
            scores[start + offset] = value
        if progress is not None:
            progress.advance(bar, len(batch))
    return scores


def run_task(
    task: TaskSpec, reranker: Reranker, *, batch_size: int = 32, progress: Progress | None = None,
    data_dir: str | Path | None = None,
) -> TaskResult:
    """Rerank one task's candidate lists and compute per-query metrics beside the first stage's."""
    if not reranker.supports(task.type):
        log.info("%s: %s does not take %s pairs; marked unsupported", task.name, reranker.name, task.type.label)
        return TaskResult(task, "unsupported", "")
    if task.parts:
        return run_composite(task, reranker, batch_size=batch_size, progress=progress, data_dir=data_dir)
    started = time.perf_counter()
    pack = read_pack(task.pack_path(data_dir))
    fingerprint = pack_fingerprint(pack)

    judged = judged_queries(pack.qrels_dict())
    candidates = pack.candidates
    in_lists = set(candidates["query_id"])
    n_no_qrels = len(in_lists - judged.qrels.keys() - set(judged.no_relevant))
    candidates = candidates[candidates["query_id"].isin(judged.qrels.keys())]
    n_identical = 0
    if task.ignore_identical_ids:
        identical = candidates["query_id"] == candidates["doc_id"]
        n_identical = int(identical.sum())
        candidates = candidates[~identical]
    candidates = candidates.reset_index(drop=True)
    for qid in judged.no_relevant:
        log.warning("%s: query %r has no relevant document in the qrels; dropped", task.name, qid)
    if n_no_qrels:
        log.warning("%s: %d queries in the candidate lists have no qrels; dropped", task.name, n_no_qrels)

    reranker.start_task(task, pack)
    pairs = [
        Pair(task.instruction, pack.queries[q], pack.documents[d])
        for q, d in zip(candidates["query_id"], candidates["doc_id"])
    ]
    scores = score_pairs(task, reranker, pairs, batch_size, progress)

    ranking = strict_ranking(candidates, scores)
    first_stage = strict_ranking(candidates, np.zeros(len(candidates)))  # ties → first-stage order
    table = per_query_table(task.metric, judged.qrels, ranking, first_stage)
    return TaskResult(
        task, "ok", fingerprint, table, ranking, n_no_qrels, len(judged.no_relevant), n_identical,
        time.perf_counter() - started,
    )


def run_composite(task: TaskSpec, reranker: Reranker, **options) -> TaskResult:
    """Run each part of a composite task; per-query rows and runs are kept with ids ``<part>/<query id>``."""
    parts = [run_task(unit, reranker, **options) for unit in task.units()]

    def prefixed(frame: pd.DataFrame, part: TaskResult) -> pd.DataFrame:
        return frame.assign(query_id=part.task.name + "/" + frame["query_id"])

    return TaskResult(
        task, "ok",
        hashlib.sha256(" ".join(p.pack_hash for p in parts).encode()).hexdigest()[:16],
        per_query=pd.concat([prefixed(p.per_query, p) for p in parts], ignore_index=True),
        ranking=pd.concat([prefixed(p.ranking, p) for p in parts], ignore_index=True),
        n_no_qrels=sum(p.n_no_qrels for p in parts),
        n_no_relevant=sum(p.n_no_relevant for p in parts),
        n_identical_ids=sum(p.n_identical_ids for p in parts),
        seconds=sum(p.seconds for p in parts),
        parts=parts,
    )


def progress_bar(quiet: bool) -> Progress | nullcontext:
    if quiet:
        return nullcontext()
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("pairs"),
        TimeRemainingColumn(), console=Console(stderr=True), transient=False,
    )
