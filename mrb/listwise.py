"""Listwise reranking under the runner: sliding windows over each query's candidates, repaired and counted
outputs, each window's output in the score cache, and the final order as tie-free scores.

A `ListwiseReranker` ranks windows, not pairs. Each query's candidates start in first-stage order (rank,
then doc id) and are ranked window by window, back to front (`window_spans`); a window sees the order the
windows before it left. Windows of different queries are independent: the k-th window of every query is
ranked in one round, in batches of up to `batch_size` windows (halved on out-of-memory). Each window's raw
output is appended to the score cache as one batch under the model identity, with doc ids
``window:<start>-<end>:<digest of the window's doc ids in order>:<i>`` (its i-th index) and ``…:n`` (how
many), so a run killed at any point resumes window by window: a window is looked up by exactly what it
shows the model. The final order becomes the scores n − position, strictly decreasing, so the
evaluator's tie-break is never used.
"""

from __future__ import annotations

import hashlib
import logging
import numbers
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from mrb.batching import ImageCache
from mrb.cache import ScoreCache
from mrb.data import Pair
from mrb.errors import MRBError
from mrb.options import RunOptions
from mrb.progress import RunProgress
from mrb.rerankers.base import ListwiseReranker, Window, check_window
from mrb.runner import RunStats, _is_oom, halved_after_oom, queries_named, with_one_retry
from mrb.tasks import TaskSpec

log = logging.getLogger(__name__)
T = TypeVar("T")


def window_spans(n: int, window: int, stride: int, full_last_window: bool = False) -> list[tuple[int, int]]:
    """The [start, end) of each window over `n` candidates, in the order they are ranked: the last `window`
    first, then `stride` places nearer the top each time, until a window starts at the top. That last
    window is the previous one moved by `stride` and cut at 0 (rank_llm), or the top `window` candidates
    (`full_last_window`, MTEB's LightOn wrapper). A list of fewer than two candidates needs no window."""
    check_window(window, stride)
    if n < 2:
        return []
    start, end = max(n - window, 0), n
    spans = [(start, end)]
    while start > 0:
        start, end = start - stride, end - stride
        if start <= 0:
            start, end = 0, window if full_last_window else end
        spans.append((start, end))
    return spans


@dataclass(frozen=True)
class Outcome:
    """A window's output made a permutation: the order, and what had to be repaired."""

    order: list[int]
    duplicates: int = 0  # repeated indices dropped
    unknown: int = 0  # indices outside the window dropped
    missing: int = 0  # indices the output lacked, appended in input order
    unparsable: bool = False  # no valid index at all: the window keeps its input order

    @property
    def repaired(self) -> bool:
        return not self.unparsable and self.duplicates + self.unknown + self.missing > 0


def repair(output: Sequence[int], n: int) -> Outcome:
    """`output` as a permutation of range(n), as rank_llm repairs a generated ranking: duplicates and indices
    outside the window dropped, missing indices appended in input order."""
    order: list[int] = []
    seen: set[int] = set()
    duplicates = unknown = 0
    for index in output:
        if not 0 <= index < n:
            unknown += 1
        elif index in seen:
            duplicates += 1
        else:
            seen.add(index)
            order.append(index)
    if not order:
        return Outcome(list(range(n)), unparsable=True)
    missing = [i for i in range(n) if i not in seen]
    return Outcome(order + missing, duplicates, unknown, len(missing))


def count(stats: RunStats, outcome: Outcome) -> None:
    """Add a window's repairs to the run statistics."""
    if outcome.unparsable:
        stats.unparsable_windows += 1
    elif outcome.repaired:
        stats.repaired_windows += 1
        stats.duplicate_labels += outcome.duplicates
        stats.unknown_labels += outcome.unknown
        stats.missing_labels += outcome.missing


def reorder(window: list[T], outcome: Outcome) -> list[T]:
    """A window's items in the order of its (repaired) output."""
    return [window[j] for j in outcome.order]


def window_key(start: int, end: int, doc_ids: Sequence[str]) -> str:
    """The cache name of a window: its place and a digest of the doc ids it shows, in order."""
    digest = hashlib.sha256("\0".join(doc_ids).encode()).hexdigest()[:16]
    return f"window:{start}-{end}:{digest}"


def cached_output(scores: dict[tuple[str, str], float], query_id: str, key: str) -> list[int] | None:
    """A window's output from the cache's scores, or None when it was not (completely) stored."""
    n = scores.get((query_id, f"{key}:n"))
    if n is None:
        return None
    values = [scores.get((query_id, f"{key}:{i}")) for i in range(int(n))]
    return None if any(v is None for v in values) else [int(v) for v in values if v is not None]


def cached_windows(candidates: pd.DataFrame, reranker: ListwiseReranker, known: dict[tuple[str, str], float]) -> tuple[int, int]:
    """The windows a run of `reranker` ranks over `candidates` (query_id, doc_id, rank), and how many of them the
    cache's entries `known` hold: each query's windows replayed from the cache up to its first uncached one (the
    windows after it show candidates in an order only the model's output decides)."""
    windows = cached = 0
    ordered = candidates.sort_values(["rank", "doc_id"], kind="stable")
    for query_id, docs in ordered.groupby("query_id", sort=False)["doc_id"]:
        order = docs.tolist()
        spans = window_spans(len(order), reranker.window, reranker.stride, reranker.full_last_window)
        windows += len(spans)
        for start, end in spans:
            output = cached_output(known, str(query_id), window_key(start, end, order[start:end]))
            if output is None:
                break
            cached += 1
            order[start:end] = reorder(order[start:end], repair(output, end - start))
    return windows, cached


@dataclass
class _Query:
    """One query's state: its rows in their current order and its window spans."""

    query_id: str
    rows: list[int]
    spans: list[tuple[int, int]]


class WindowRanker:
    """Ranks one task's candidates with a `ListwiseReranker` (see the module docstring)."""

    def __init__(
        self,
        task: TaskSpec,
        reranker: ListwiseReranker,
        options: RunOptions,
        cache: ScoreCache | None,
        images: ImageCache,
        stats: RunStats,
        progress: RunProgress | None,
    ) -> None:
        self.task, self.reranker, self.cache, self.images = task, reranker, cache, images
        self.stats, self.progress = stats, progress
        self.cap = options.batch_size  # windows per call; lowered after an out-of-memory error, for the rest of the task
        self.loaded = False

    def run(self, pairs: Sequence[Pair], first_stage_rank: Sequence[int], known: dict[tuple[str, str], float]) -> np.ndarray:
        """Scores aligned with `pairs`: n − position in each query's final order. `known`: the score cache's
        entries (window outputs) of this model and task."""
        by_query: dict[str, list[int]] = {}
        for i in sorted(range(len(pairs)), key=lambda i: (first_stage_rank[i], pairs[i].document.id)):
            by_query.setdefault(pairs[i].query.id, []).append(i)
        r = self.reranker
        queries = [
            _Query(q, rows, window_spans(len(rows), r.window, r.stride, r.full_last_window)) for q, rows in by_query.items()
        ]
        if self.progress is not None:
            self.progress.start_task(self.task.name, sum(len(q.spans) for q in queries))
        try:
            for step in range(max((len(q.spans) for q in queries), default=0)):
                todo = []
                for query in (q for q in queries if step < len(q.spans)):
                    start, end = query.spans[step]
                    key = window_key(start, end, [pairs[i].document.id for i in query.rows[start:end]])
                    output = cached_output(known, query.query_id, key)
                    if output is None:
                        todo.append((query, key))
                    else:
                        self.stats.window_cache_hits += 1
                        self._apply(query, step, output)
                self._rank(pairs, todo, step)
        finally:
            if self.cache is not None:
                self.cache.close()
        scores = np.full(len(pairs), np.nan)
        for query in queries:
            scores[query.rows] = np.arange(len(query.rows), 0, -1, dtype=np.float64)
        return scores

    def _apply(self, query: _Query, step: int, output: list[int]) -> None:
        start, end = query.spans[step]
        outcome = repair(output, end - start)
        count(self.stats, outcome)
        query.rows[start:end] = reorder(query.rows[start:end], outcome)
        if self.progress is not None:
            self.progress.advance(1)

    def _rank(self, pairs: Sequence[Pair], todo: list[tuple[_Query, str]], step: int) -> None:
        """Rank the windows of one round in batches of `cap`, halving the batch on out-of-memory. The model loads
        its weights at the first window the cache does not hold (not at all on a run that is all cached)."""
        if todo and not self.loaded:
            self.reranker.ready()
            self.images.max_pixels = getattr(self.reranker, "max_pixels", None)  # known once its processor is
            self.loaded = True
        pending = deque(todo)
        while pending:
            batch = [pending.popleft() for _ in range(min(self.cap, len(pending)))]
            windows = []
            for query, _ in batch:
                start, end = query.spans[step]
                rows = query.rows[start:end]
                windows.append(Window(self.task.instruction, pairs[rows[0]].query, [pairs[i].document for i in rows]))
            try:
                outputs = self._call(windows)
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                self.cap = halved_after_oom(
                    exc,
                    self.task.name,
                    self.stats,
                    len(batch),
                    f"window (query {batch[0][0].query_id!r}, {len(windows[0].candidates)} candidates); "
                    "lower window, max_pixels or max_length",
                )
                log.warning("%s: out of memory on %d windows; retrying in batches of %d", self.task.name, len(batch), self.cap)
                pending.extendleft(reversed(batch))
                continue
            for (query, key), output in zip(batch, outputs):
                if self.cache is not None:
                    ids = [f"{key}:{i}" for i in range(len(output))] + [f"{key}:n"]
                    self.cache.append([query.query_id] * len(ids), ids, [*map(float, output), float(len(output))])
                self.stats.windows += 1
                self._apply(query, step, output)

    def _call(self, windows: list[Window]) -> list[list[int]]:
        """The reranker's checked outputs for a batch of windows; a failure is retried once (`with_one_retry`)."""

        def attempt(n: int) -> Any:
            started = time.perf_counter()
            try:
                return self.reranker.rank_windows(windows)
            finally:
                self.stats.model_seconds += time.perf_counter() - started

        def failed_twice(exc: Exception) -> str:
            where = (
                f"The {self.stats.windows + self.stats.window_cache_hits} windows ranked before it are kept in the "
                "score cache; run again to resume"
                if self.cache is not None
                else "No score cache is set (give an output folder to keep windows)"
            )
            return (
                f"reranker {self.reranker.name!r} failed twice on a batch of {len(windows)} windows "
                f"({queries_named(w.query.id for w in windows)}): {type(exc).__name__}: {exc}. {where}"
            )

        got = with_one_retry(self.task.name, self.stats, attempt, failed_twice)
        return check_outputs(self.task, self.reranker, windows, got)


def check_outputs(task: TaskSpec, reranker: ListwiseReranker, windows: Sequence[Window], got: Any) -> list[list[int]]:
    """Each window's output as a list of ints (indices outside the window are kept as -1 for the repair);
    anything but one sequence of integers per window is an `MRBError` naming the reranker, task and query."""
    where = f"task {task.name}: reranker {reranker.name!r}"
    if isinstance(got, str | bytes) or not isinstance(got, Sequence) or len(got) != len(windows):
        size = (
            f"{len(got)} outputs" if isinstance(got, Sequence) and not isinstance(got, str | bytes) else f"a {type(got).__name__}"
        )
        raise MRBError(f"{where} returned {size} for {len(windows)} windows; rank_windows must return one order per window")
    outputs = []
    for window, output in zip(windows, got):
        if isinstance(output, str | bytes) or not isinstance(output, Sequence | np.ndarray):
            raise MRBError(
                f"{where} returned a {type(output).__name__} for the window of query {window.query.id!r}; "
                "rank must return indices into the window's candidates"
            )
        values = list(output)
        for value in values:
            if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
                raise MRBError(
                    f"{where} returned {type(value).__name__} {value!r} in the order of the window of query "
                    f"{window.query.id!r}; rank must return indices into the window's candidates"
                )
        n = len(window.candidates)
        outputs.append([int(v) if 0 <= v < n else -1 for v in values])
    return outputs
