"""Run a reranker over tasks: pairs in batches → scores (cached, resumable) → strict ranking → per-query metrics."""

from __future__ import annotations

import logging
import math
import numbers
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from mrb.batching import (
    ImageCache,
    batch_groups,
    pair_tokens,
    plan_batches,
    token_estimator,
)
from mrb.cache import ScoreCache, task_key
from mrb.data import Pack, Pair, read_pack
from mrb.distributed import World
from mrb.errors import MRBError
from mrb.evaluation import TaskEvaluator, combine, unsupported
from mrb.identity import ModelIdentity, identify
from mrb.options import RunOptions
from mrb.progress import RunProgress
from mrb.rerankers.base import ListwiseReranker, Reranker, prepares_ahead
from mrb.results import TaskScores
from mrb.tasks import TaskSpec

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class RunStats:
    """What a run did: pairs, cache hits, image decodes, retries and where the time went."""

    pairs: int = 0  # pairs of the task(s) handled by this process
    scored: int = 0  # pairs the model scored in this run
    cache_hits: int = 0  # pairs whose score came from the score cache
    cache_rejected: int = 0  # cached scores dropped because their batch failed its checksum (scored again)
    batches: int = 0
    decodes: int = 0  # images decoded
    image_requests: int = 0  # images the reranker asked for
    oom_retries: int = 0  # out-of-memory errors answered by halving the batch
    retries: int = 0  # failed batches retried
    cache_syncs: int = 0  # fsyncs of the score cache (group commits)
    cache_seconds: float = 0.0  # reading and appending the score cache
    windows: int = 0  # listwise windows the model ranked
    window_cache_hits: int = 0  # listwise windows whose output came from the score cache
    repaired_windows: int = 0  # listwise outputs that were not a permutation of their window, repaired
    unparsable_windows: int = 0  # listwise outputs without one valid index: the window kept its order
    duplicate_labels: int = 0  # repeated indices dropped from repaired outputs
    unknown_labels: int = 0  # indices outside their window dropped from repaired outputs
    missing_labels: int = 0  # indices absent from repaired outputs, appended in input order
    prep_seconds: float = 0.0  # the reranker's prepare(), or decoding images ahead of the model
    model_seconds: float = 0.0  # inside the reranker's forward() (or score(), when it does not prepare)
    seconds: float = 0.0  # wall time, pack reading and metrics included
    model: dict[str, int] = field(default_factory=dict)  # the reranker's own `counters` (prefix tokens saved, …)

    def add(self, other: RunStats) -> None:
        for f in fields(self):
            if f.name == "model":
                for key, value in other.model.items():
                    self.model[key] = self.model.get(key, 0) + value
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def pairs_per_second(self) -> float:
        return self.scored / self.model_seconds if self.model_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("prep_seconds", "model_seconds", "cache_seconds", "seconds"):
            out[key] = round(out[key], 3)
        out["pairs_per_second"] = round(self.pairs_per_second, 1)
        return out

    def summary(self) -> str:
        if self.windows + self.window_cache_hits:
            done, rate = (
                self._windows_summary(),
                f"{self.windows / self.model_seconds if self.model_seconds else 0:,.1f} windows/s",
            )
        else:
            done, rate = (
                f"{self.pairs} pairs: {self.scored} scored, {self.cache_hits} from the cache",
                f"{self.pairs_per_second:,.0f} pairs/s",
            )
        return (
            done + (f" ({self.cache_rejected} damaged cache entries scored again)" if self.cache_rejected else "") + "; "
            f"model {self.model_seconds:.1f} s ({rate}), "
            f"preparation {self.prep_seconds:.1f} s, total {self.seconds:.1f} s; "
            f"{self.decodes} image decodes for {self.image_requests} requests; "
            f"{self.oom_retries} out-of-memory retries, {self.retries} failed batches retried"
            + (f"; {self.model['prefix_tokens_saved']:,} prefix tokens shared" if self.model.get("prefix_tokens_saved") else "")
        )

    def _windows_summary(self) -> str:
        return (
            f"{self.pairs} candidates in {self.windows + self.window_cache_hits} windows: {self.windows} ranked, "
            f"{self.window_cache_hits} from the cache; {self.repaired_windows} outputs repaired ({self.duplicate_labels} "
            f"duplicate and {self.unknown_labels} unknown labels dropped, {self.missing_labels} missing appended), "
            f"{self.unparsable_windows} unparsable (order kept)"
        )


def _is_oom(exc: BaseException) -> bool:
    """torch's out-of-memory error; torch is only consulted when something has imported it."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)


def halved_after_oom(exc: BaseException, task: str, stats: RunStats, size: int, single: str) -> int:
    """After an out-of-memory error on `size` items of `task`: memory freed, the retry counted, and the halved batch
    cap; an `MRBError` ("task …: out of memory on a single " + `single`) when one item alone did not fit."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    stats.oom_retries += 1
    if size == 1:
        raise MRBError(f"task {task}: out of memory on a single {single}") from exc
    return size // 2


def with_one_retry(task: str, stats: RunStats, attempt: Callable[[int], T], failed_twice: Callable[[Exception], str]) -> T:
    """`attempt(1)`, and `attempt(2)` once after a failure other than out-of-memory or an `MRBError`; a second
    failure stops the task with ``task …: `` + `failed_twice(exc)`. An `MRBError` is raised naming the task."""
    for n in (1, 2):
        try:
            return attempt(n)
        except MRBError as exc:
            if str(exc).startswith(f"task {task}"):
                raise
            raise MRBError(f"task {task}: {exc}") from exc
        except Exception as exc:
            if _is_oom(exc):
                raise
            if n == 2:
                raise MRBError(f"task {task}: {failed_twice(exc)}") from exc
            stats.retries += 1
            log.warning("%s: reranker failed on a batch (%s: %s); retrying once", task, type(exc).__name__, exc)
    raise AssertionError("the second attempt returns or raises")


def queries_named(ids: Iterable[str]) -> str:
    """``query 'q1'``, or ``queries 'q1', 'q2', 'q3' and 4 more``."""
    names = list(dict.fromkeys(ids))
    shown = ", ".join(repr(q) for q in names[:3])
    return f"query {shown}" if len(names) == 1 else f"queries {shown}" + (f" and {len(names) - 3} more" if len(names) > 3 else "")


class TaskScorer:
    """Scores one task's pairs: cache look-up, longest-first batches under a token budget, prefetch,
    one retry on failure, halving on out-of-memory, and a durable cache append per batch."""

    def __init__(
        self,
        task: TaskSpec,
        reranker: Reranker,
        options: RunOptions,
        cache: ScoreCache | None,
        images: ImageCache,
        stats: RunStats,
        progress: RunProgress | None,
    ) -> None:
        self.task, self.reranker, self.options, self.cache = task, reranker, options, cache
        self.images, self.stats, self.progress = images, stats, progress
        self.cap = options.batch_size  # lowered after an out-of-memory error, for the rest of the task
        self.split = prepares_ahead(reranker)  # prepare + forward, rather than score alone
        self._prepare_lock = threading.Lock()  # one `prepare` at a time
        self._stats_lock = threading.Lock()

    def run(self, pairs: Sequence[Pair], known: dict[tuple[str, str], float]) -> np.ndarray:
        """Scores aligned with `pairs`: `known` ones (from the cache) reused, the rest computed and appended."""
        scores = np.full(len(pairs), np.nan)
        todo = []
        for i, p in enumerate(pairs):
            value = known.get((p.query.id, p.document.id))
            if value is None:
                todo.append(i)
            else:
                scores[i] = value
        self.stats.cache_hits += len(pairs) - len(todo)
        if self.progress is not None:
            self.progress.start_task(self.task.name, len(pairs), done=len(pairs) - len(todo))
        estimate = getattr(self.reranker, "estimate_tokens", None) or token_estimator(self.images.max_pixels)
        lengths = pair_tokens([pairs[i] for i in todo], estimate)
        grouping = getattr(self.reranker, "batch_group", None)  # what the reranker shares between pairs, if it says
        groups = [grouping(pairs[i]) for i in todo] if callable(grouping) else None
        if groups is None or all(g is None for g in groups):
            groups = batch_groups([pairs[i] for i in todo])
        plan = [
            [todo[j] for j in batch]
            for batch in plan_batches(lengths, self.options.batch_size, self.options.max_batch_tokens, groups)
        ]
        sides = (("q", pairs[i].query) for i in todo), (("d", pairs[i].document) for i in todo)
        self.images.expect(Counter((role, r.id) for side in sides for role, r in side if r.has_image))
        counters = getattr(self.reranker, "counters", None)
        before = dict(counters) if isinstance(counters, dict) else {}
        try:
            for batch, ready in self._prepared(pairs, plan):
                self._score_batch(pairs, batch, scores, ready)
        finally:
            if self.cache is not None:
                started = time.perf_counter()
                self.cache.close()
                self.stats.cache_seconds += time.perf_counter() - started
                self.stats.cache_syncs += self.cache.syncs
            if isinstance(counters, dict):  # the reranker's counters grew by this task's work
                for key, value in counters.items():
                    self.stats.model[key] = self.stats.model.get(key, 0) + value - before.get(key, 0)
        return scores

    def _prepared(self, pairs: Sequence[Pair], plan: list[list[int]]) -> Iterator[tuple[list[int], Future[Any] | None]]:
        """The batches to score, in plan order, each with the future of its `prepare` result (or None).

        A planned batch is cut to the current cap (lowered after an out-of-memory error) when it is
        handed out, so what is prepared ahead is what gets scored. With `workers` threads, up to
        `workers` batches ahead of the model are prepared: by the reranker's own `prepare` when it has
        one, otherwise by decoding their images (once the first batch has shown that it reads images).
        """
        queue = deque(plan)

        def take() -> list[int]:
            batch = queue.popleft()
            if len(batch) > self.cap:
                queue.extendleft(reversed([batch[s : s + self.cap] for s in range(self.cap, len(batch), self.cap)]))
                batch = batch[: self.cap]
            return batch

        if self.options.workers == 0:
            while queue:
                yield take(), None
            return
        pool = ThreadPoolExecutor(self.options.workers, thread_name_prefix="mrb-prep")
        work = self._prepare if self.split else self._decode
        ahead: deque[tuple[list[int], Future[Any] | None]] = deque()
        try:
            first = True
            while queue or ahead:
                prepare = self.split or (not first and self.images.requests > 0)
                while queue and len(ahead) < (self.options.workers + 1 if prepare else 1):
                    batch = take()
                    ahead.append((batch, pool.submit(work, [pairs[i] for i in batch]) if prepare else None))
                batch, ready = ahead.popleft()
                if ready is not None and not self.split:
                    ready.result()  # its images are in the cache
                    ready = None
                yield batch, ready
                first = False
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _decode(self, batch: list[Pair]) -> None:
        started = time.perf_counter()
        for pair in batch:
            self.images.warm("q", pair.query)
            self.images.warm("d", pair.document)
        self._add_prep_time(started)

    def _prepare(self, batch: list[Pair]) -> Any:
        """The reranker's `prepare`, one batch at a time (tokenisers and processors are not thread-safe)."""
        with self._prepare_lock:
            started = time.perf_counter()
            try:
                return self.reranker.prepare(batch)
            finally:
                self._add_prep_time(started)

    def _add_prep_time(self, started: float) -> None:
        with self._stats_lock:
            self.stats.prep_seconds += time.perf_counter() - started

    def _score_batch(self, pairs: Sequence[Pair], batch: list[int], scores: np.ndarray, ready: Future[Any] | None = None) -> None:
        pending = deque(batch[s : s + self.cap] for s in range(0, len(batch), self.cap))
        if len(pending) > 1:
            ready = None  # prepared for the whole batch, but it is scored in smaller chunks
        while pending:
            chunk = pending.popleft()
            try:
                values = self._call(pairs, chunk, ready)
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                self.cap = halved_after_oom(
                    exc,
                    self.task.name,
                    self.stats,
                    len(chunk),
                    f"pair ({queries_named([pairs[chunk[0]].query.id])}, document {pairs[chunk[0]].document.id!r}); "
                    "lower max_pixels or max_length",
                )
                log.warning(
                    "%s: out of memory on a batch of %d pairs; retrying in batches of %d", self.task.name, len(chunk), self.cap
                )
                rest = [i for c in [chunk, *pending] for i in c]
                pending = deque(rest[s : s + self.cap] for s in range(0, len(rest), self.cap))
                continue
            finally:
                ready = None
            scores[chunk] = values
            if self.cache is not None:
                started = time.perf_counter()
                self.cache.append([pairs[i].query.id for i in chunk], [pairs[i].document.id for i in chunk], values)
                self.stats.cache_seconds += time.perf_counter() - started
            self.stats.scored += len(chunk)
            self.stats.batches += 1
            if self.progress is not None:
                self.progress.advance(len(chunk))

    def _call(self, pairs: Sequence[Pair], chunk: list[int], ready: Future[Any] | None) -> list[float]:
        """The reranker's checked scores for one batch (from its prepared inputs when `ready`); a failure is retried
        once, preparing again (`with_one_retry`)."""
        batch = [pairs[i] for i in chunk]

        def attempt(n: int) -> Any:
            prepared = None
            if self.split:
                prepared = ready.result() if ready is not None and n == 1 else self._prepare(batch)
            started = time.perf_counter()
            try:
                return self.reranker.forward(prepared) if self.split else self.reranker.score(batch)
            finally:
                self.stats.model_seconds += time.perf_counter() - started

        def failed_twice(exc: Exception) -> str:
            where = (
                f"The {self.stats.scored + self.stats.cache_hits} pairs scored before it are kept in the score cache; "
                "run again to resume"
                if self.cache is not None
                else "No score cache is set (give an output folder to keep scores)"
            )
            return (
                f"reranker {self.reranker.name!r} failed twice on a batch of {len(batch)} pairs "
                f"({queries_named(p.query.id for p in batch)}): {type(exc).__name__}: {exc}. {where}"
            )

        got = with_one_retry(self.task.name, self.stats, attempt, failed_twice)
        return check_scores(self.task, self.reranker, batch, got)


def check_scores(task: TaskSpec, reranker: Reranker, batch: Sequence[Pair], got: Any) -> list[float]:
    """The batch's scores as floats: exactly one finite real number per pair, given as a sequence, a NumPy
    array or a tensor of shape (n,). Anything else is an `MRBError` naming the reranker, task and first query."""
    where = f"task {task.name}: reranker {reranker.name!r}"
    first = f"(first query {batch[0].query.id!r})"
    values = _real_vector(got)
    if isinstance(values, str):
        raise MRBError(
            f"{where} returned {values} for a batch of {len(batch)} pairs {first}; "
            f"score must return one finite real number per pair"
        )
    if len(values) != len(batch):
        raise MRBError(f"{where} returned {len(values)} scores for a batch of {len(batch)} pairs {first}")
    for pair, value in zip(batch, values):
        if not math.isfinite(value):
            raise MRBError(f"{where} returned {value} for query {pair.query.id!r}, document {pair.document.id!r}")
    return values


def _real_vector(got: Any) -> list[float] | str:
    """`got` as a list of floats when it is a 1-D sequence, array or tensor of real numbers; else what it is, in words."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(got, torch.Tensor):
        if got.dim() != 1:
            return f"a tensor of shape {tuple(got.shape)}"
        if got.is_complex() or got.dtype == torch.bool:
            return f"a tensor of {got.dtype}"
        return got.detach().to("cpu", torch.float64).tolist()
    if isinstance(got, np.ndarray):
        if got.ndim != 1:
            return f"an array of shape {got.shape}"
        if got.dtype.kind not in "iuf":
            return f"an array of dtype {got.dtype}"
        return got.astype(np.float64).tolist()
    if isinstance(got, str | bytes | dict) or not isinstance(got, Sequence):
        return f"a {type(got).__name__}" if got is not None else "None"
    for value in got:
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
            return f"a {type(got).__name__} holding {type(value).__name__} {value!r}"
    return [float(v) for v in got]


def score_candidates(
    task: TaskSpec,
    pack: Pack,
    reranker: Reranker,
    identity: ModelIdentity,
    candidates: pd.DataFrame,
    options: RunOptions,
    progress: RunProgress | None,
    world: World,
    stats: RunStats,
) -> np.ndarray | None:
    """Scores aligned with `candidates` on rank 0 (None on other ranks), each rank scoring its share of the queries."""
    query_ids, doc_ids = candidates["query_id"].tolist(), candidates["doc_id"].tolist()
    mine = world.shard(query_ids) if world.size > 1 else None
    rows = [i for i, q in enumerate(query_ids) if mine is None or q in mine]
    cache, known = None, {}
    if options.cache_dir is not None and identity.digest is not None:
        cache = ScoreCache(options.cache_dir, identity, task_key(task, pack))
        if options.overwrite == "always":
            cache.clear()  # on every rank: without a shared file system each has its own cache
            world.barrier()
        started = time.perf_counter()
        found = cache.load()
        stats.cache_seconds += time.perf_counter() - started
        known, stats.cache_rejected = found.scores, stats.cache_rejected + found.rejected
    listwise = isinstance(reranker, ListwiseReranker)  # its cache holds windows: it gets ready at its first uncached one
    if not listwise and any((query_ids[i], doc_ids[i]) not in known for i in rows):
        reranker.ready()  # a model loads its weights only when it has pairs to score
    images = ImageCache(options.image_cache_mb << 20, max_pixels=getattr(reranker, "max_pixels", None))
    queries = {q: pack.queries[q].with_source(images.side("q")) for q in {query_ids[i] for i in rows}}
    documents = {d: pack.documents[d].with_source(images.side("d")) for d in {doc_ids[i] for i in rows}}
    pairs = [Pair(task.instruction, queries[query_ids[i]], documents[doc_ids[i]]) for i in rows]
    stats.pairs += len(pairs)
    if listwise:
        from mrb.listwise import WindowRanker  # it builds on this module

        ranks = candidates["rank"].to_numpy()
        ranker = WindowRanker(task, reranker, options, cache, images, stats, progress)  # type: ignore[arg-type]
        local = ranker.run(pairs, [int(ranks[i]) for i in rows], known)
    else:
        local = TaskScorer(task, reranker, options, cache, images, stats, progress).run(pairs, known)
    stats.decodes += images.decodes
    stats.image_requests += images.requests
    parts = world.gather((rows, local, stats))
    if parts is None:
        return None
    scores = np.full(len(candidates), np.nan)
    for rank, (part_rows, part_scores, part_stats) in enumerate(parts):
        scores[part_rows] = part_scores
        if rank > 0:
            stats.add(part_stats)
    return scores


def run_task(
    task: TaskSpec,
    reranker: Reranker,
    *,
    identity: ModelIdentity | None = None,
    options: RunOptions | None = None,
    progress: RunProgress | None = None,
    world: World | None = None,
    data_dir: str | Path | None = None,
) -> TaskScores | None:
    """Rerank one task's candidate lists and return its scores beside the first stage's (`TaskEvaluator`).

    `identity` (default: `identify(reranker)`) keys the score cache; `options` (default: ``RunOptions()``)
    set batching, cache and prefetch; under torch.distributed (`world`), every rank scores its share and
    rank 0 alone gets the scores (other ranks get None). The run statistics are in the result's `stats`.
    """
    options = options or RunOptions()
    world = world or World()
    identity = identity or identify(reranker)
    if not reranker.supports(task.type):
        log.info("%s: %s does not take %s pairs; marked unsupported", task.name, reranker.name, task.type.label)
        return replace(unsupported(task), stats=RunStats())
    if task.parts:
        return run_composite(
            task, reranker, identity=identity, options=options, progress=progress, world=world, data_dir=data_dir
        )
    started = time.perf_counter()
    stats = RunStats()
    pack = read_pack(task.pack_path(data_dir))
    evaluator = TaskEvaluator(task, pack)  # checks that task and pack agree before anything is scored
    evaluator.log_set_aside()
    reranker.start_task(task, pack)
    scores = score_candidates(task, pack, reranker, identity, evaluator.candidates, options, progress, world, stats)
    if scores is None:
        return None
    result = evaluator.evaluate(scores)
    stats.seconds = time.perf_counter() - started
    return replace(result, stats=stats, seconds=stats.seconds)


def run_composite(task: TaskSpec, reranker: Reranker, **options: Any) -> TaskScores | None:
    """Run each part of a composite task and `combine` them (None on ranks other than 0)."""
    parts = [run_task(unit, reranker, **options) for unit in task.units()]
    stats = RunStats()
    for part in parts:
        if part is not None and part.stats is not None:
            stats.add(part.stats)
    if any(p is None for p in parts):
        return None
    return replace(combine(task, [p for p in parts if p is not None]), stats=stats, seconds=stats.seconds)
