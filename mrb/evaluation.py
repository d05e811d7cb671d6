"""`TaskEvaluator`: the one place that decides which candidates of a pack a reranker scores and how
their scores become values.

Built once per task unit from its spec and pack, it checks that they agree (the type's sides are in
the records, the declared depth is within the pack's, there are candidates and evaluable queries)
before anything is scored, then owns the rules: the judged split (`no_relevant`), the identical-id
filter, the depth cut (only the top `depth` of each list is reranked; the rest follow in
first-stage order), the strict order, the measures, the task-level means and their interval, and
(`combine`) a composite task's mean over its parts. The first stage goes through the same path:
its lists are the strict order of all-zero scores.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from mrb.data import Pack, Record
from mrb.errors import MRBError
from mrb.identity import short_digest
from mrb.metrics import MEASURE_COLUMNS, judged_queries, per_query_table, strict_ranking
from mrb.results import Status, TaskScores
from mrb.stats import BOOTSTRAP_RESAMPLES, CONFIDENCE, SEED, bootstrap_ci
from mrb.tasks import Side, TaskSpec

log = logging.getLogger(__name__)
EXAMPLES = 3  # ids quoted in a message
SIDE_WORDS = {"t": "text only", "i": "an image only", "it": "an image, text or both"}


TIE_BREAK = "score desc, first-stage rank asc, doc id asc"


def metric_settings(task: TaskSpec) -> dict[str, Any]:
    """Everything besides the pack that decides a task's values; results that differ here never mix."""
    return {
        "metric": task.metric,
        "measures": MEASURE_COLUMNS,
        "depth": task.depth,
        "ignore_identical_ids": task.ignore_identical_ids,
        "no_relevant": task.no_relevant,
        "tie_break": TIE_BREAK,
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "level": CONFIDENCE, "seed": SEED},
    }


def scores_of(task: TaskSpec, status: Status = Status.OK, **values: Any) -> TaskScores:
    """`TaskScores` of `task` (its name, type, metric, depth and metric settings) holding `values`."""
    return TaskScores(
        task.name,
        task.type.label,
        task.category.value,
        task.metric,
        task.depth,
        status,
        metric_settings(task),
        **values,
    )


def unsupported(task: TaskSpec) -> TaskScores:
    """The result of a task a model does not take (its modalities): no values, never zeros."""
    return scores_of(task, Status.UNSUPPORTED)


class TaskEvaluator:
    """The scoring rules of one task unit over its pack (see the module docstring)."""

    def __init__(self, task: TaskSpec, pack: Pack) -> None:
        self.task, self.pack = task, pack
        where = f"task {task.name} (pack {pack.path})"
        if pack.candidates.empty:
            raise MRBError(f"{where}: candidates.parquet holds no candidate: there is nothing to rerank")
        check_sides(task, pack)
        deepest = int(pack.candidates["rank"].max())
        pack_depth = int(pack.manifest.get("depth") or deepest)
        if task.depth > pack_depth:
            raise MRBError(
                f"{where}: the task declares depth {task.depth} but the pack holds only the top {pack_depth} candidates "
                f"per query; lower depth in the task's YAML or build a deeper pack"
            )
        judged = judged_queries(pack.qrels, task.no_relevant)
        self.qrels = judged.qrels
        self.no_relevant = judged.no_relevant
        listed = pack.candidates["query_id"].unique().tolist()
        self.no_qrels = sorted(set(listed) - set(pack.qrels["query_id"]))
        pool = pack.candidates[pack.candidates["query_id"].isin(set(self.qrels["query_id"]))]
        self.n_identical_ids = 0
        if task.ignore_identical_ids:
            kept = pool[pool["query_id"] != pool["doc_id"]]  # BEIR's rule for ArguAna, Quora, …
            self.n_identical_ids = len(pool) - len(kept)
            pool = kept
            log.info("%s: %d candidates with the query's own id dropped (ignore_identical_ids)", task.name, self.n_identical_ids)
        if self.qrels.empty:
            judged = pack.qrels["query_id"].nunique()
            why = (
                f"none of its {judged} judged queries has a relevant document (no_relevant: drop)"
                if judged
                else "qrels.parquet judges no query"
            )
            raise MRBError(f"{where}: no query can be evaluated: {why}")
        if pool.empty:
            raise MRBError(
                f"{where}: no query can be evaluated: none of the queries of the candidate lists is judged in qrels.parquet"
            )
        reranked = pool["rank"] <= task.depth
        self.candidates = pool[reranked].reset_index(drop=True)  # exactly the rows a reranker scores
        self.below_depth = pool[~reranked].reset_index(drop=True)  # kept in first-stage order under them

    def at_depth(self, depth: int) -> TaskEvaluator:
        """This evaluator with the task reranking only the top `depth` (at most its own): the checked pool cut again,
        exactly what a `TaskEvaluator` of the task at that depth holds, with nothing checked or read twice."""
        if depth > self.task.depth:
            raise ValueError(f"depth {depth} is deeper than the evaluator's {self.task.depth}")
        shallower = copy.copy(self)
        vars(shallower).pop("first_stage_ranking", None)  # a cached property of the deeper cut
        shallower.task = self.task.model_copy(update={"depth": depth})
        reranked = self.candidates["rank"] <= depth
        shallower.candidates = self.candidates[reranked].reset_index(drop=True)
        shallower.below_depth = pd.concat([self.candidates[~reranked], self.below_depth], ignore_index=True)
        return shallower

    def log_set_aside(self) -> None:
        """Warn of the judged queries without a relevant document and the listed queries without judgements (once,
        where the task is run or built: a plan, the depth ablation and the explorer evaluate it again)."""
        name = self.task.name
        if self.no_relevant:
            fate = "scored 0" if self.task.no_relevant == "zero" else "dropped (no_relevant: drop)"
            log.warning(
                "%s: %d judged queries have no relevant document (%s): %s",
                name,
                len(self.no_relevant),
                fate,
                _examples(self.no_relevant),
            )
        if self.no_qrels:
            log.warning(
                "%s: %d queries of the candidate lists have no judgements and cannot be evaluated (dropped): %s",
                name,
                len(self.no_qrels),
                _examples(self.no_qrels),
            )

    @property
    def n_no_relevant(self) -> int:
        return len(self.no_relevant)

    @property
    def n_no_qrels(self) -> int:
        return len(self.no_qrels)

    @cached_property
    def first_stage_ranking(self) -> pd.DataFrame:
        """The first stage's own order as evaluated (all-zero scores leave it as it is), `strict_ranking`'s columns."""
        return strict_ranking(self.candidates, np.zeros(len(self.candidates)), self.below_depth)

    def first_stage(self) -> TaskScores:
        """The values of the first stage's own order."""
        return self.evaluate(np.zeros(len(self.candidates)))

    def evaluate(self, scores: np.ndarray) -> TaskScores:
        """The values of the reranked lists (`scores` align with `candidates`) beside the first stage's."""
        ranking = strict_ranking(self.candidates, scores, self.below_depth)
        per_query = per_query_table(self.task.metric, self.qrels, ranking, self.first_stage_ranking)
        per_query.insert(1, "part", "")
        task = self.task
        distinct = pd.Series(np.asarray(scores, dtype=np.float64)).groupby(self.candidates["query_id"].to_numpy()).nunique()
        return scores_of(
            task,
            per_query=per_query,
            value=float(per_query["value"].mean()),
            first_stage_value=float(per_query["first_stage_value"].mean()),
            measures={m: float(per_query[m].mean()) for m in MEASURE_COLUMNS},
            ci=bootstrap_ci([per_query["value"]]),
            pack_hash=pack_hash(self.pack),
            source_revision=_source_revision(self.pack),
            n_no_relevant=self.n_no_relevant,
            n_no_qrels=self.n_no_qrels,
            no_signal=bool(distinct.max() <= 1),
            ranking=ranking,
        )


def pack_hash(pack: Pack) -> str:
    """The pack a result was computed on, as the leaderboard's `pack_hash`: a digest of its files' hashes."""
    return short_digest(pack.manifest.get("sha256", {}))


def parts_hash(hashes: Sequence[str]) -> str:
    """A composite task's `pack_hash`: a digest of its parts' pack hashes, in part order."""
    return hashlib.sha256(" ".join(hashes).encode()).hexdigest()[:16]


def _source_revision(pack: Pack) -> str | None:
    """The revision of the source a pack was built from (its manifest's ``source``), when it records one."""
    source = pack.manifest.get("source")
    return source.get("revision") if isinstance(source, dict) else None


def combine(task: TaskSpec, parts: list[TaskScores]) -> TaskScores:
    """A composite task's scores from its parts': every value the plain mean of the parts' values
    (`TaskSpec.aggregate`), the interval a bootstrap stratified by part; per-query rows and rankings keep
    their part, with query ids ``<part>/<query id>``."""

    def prefixed(frame: pd.DataFrame, part: TaskScores) -> pd.DataFrame:
        return frame.assign(query_id=part.task + "/" + frame["query_id"])

    def mean(get: Any) -> float:
        return task.aggregate({p.task: get(p) for p in parts})

    per_query = pd.concat(
        [prefixed(p.per_query, p).assign(part=p.task) for p in parts if p.per_query is not None], ignore_index=True
    )
    return scores_of(
        task,
        per_query=per_query,
        value=mean(lambda p: p.value),
        first_stage_value=mean(lambda p: p.first_stage_value),
        measures={m: mean(lambda p, m=m: p.measures[m]) for m in MEASURE_COLUMNS},
        ci=bootstrap_ci([p.per_query["value"] for p in parts if p.per_query is not None]),
        parts={p.task: p.value for p in parts if p.value is not None},
        pack_hash=parts_hash([p.pack_hash for p in parts]),
        source_revision=",".join(p.source_revision or "" for p in parts) if any(p.source_revision for p in parts) else None,
        n_no_relevant=sum(p.n_no_relevant for p in parts),
        n_no_qrels=sum(p.n_no_qrels for p in parts),
        no_signal=all(p.no_signal for p in parts),
        ranking=pd.concat([prefixed(p.ranking, p) for p in parts if p.ranking is not None], ignore_index=True),
    )


def mean_interval(tasks: Sequence[Sequence[Sequence[float] | np.ndarray]]) -> tuple[float, float]:
    """The 95% bootstrap interval of a mean over tasks (a type, category or ALL column), each task given as
    its parts' per-query values (one array for a plain task): every part resampled on its own and weighted
    1 / (tasks × parts of its task), as the column averages the task values and a task its parts."""
    weights = [1 / (len(tasks) * len(parts)) for parts in tasks for _ in parts]
    return bootstrap_ci([part for parts in tasks for part in parts], weights=weights)


def check_sides(task: TaskSpec, pack: Pack) -> None:
    """Every record has what the task's type says its side is: text only (``t``), an image only (``i``),
    or image and/or text (``it``, with some images and some texts on that side)."""
    for role, side, records in (
        ("query", task.type.query_side, pack.queries),
        ("document", task.type.document_side, pack.documents),
    ):
        for record in records.values():
            problem = _side_problem(record, side)
            if problem is not None:
                raise MRBError(
                    f"task {task.name} is {task.type.label}, so each {role} is {SIDE_WORDS[side]}, but {role} {record.id!r} "
                    f"of pack {pack.path} {problem}; the task's type does not match its pack"
                )
        if side == "it" and records:
            for has, what in ((lambda r: r.has_image, "an image"), (lambda r: bool(r.text), "text")):
                if not any(has(r) for r in records.values()):
                    raise MRBError(
                        f"task {task.name} is {task.type.label}, but no {role} of pack {pack.path} has {what}; "
                        "the task's type does not match its pack"
                    )


def _side_problem(record: Record, side: Side) -> str | None:
    has_text, has_image = bool(record.text), record.has_image
    if side == "t":
        return "has an image" if has_image else None if has_text else "has no text"
    if side == "i":
        return "has text" if has_text else None if has_image else "has no image"
    return None if has_text or has_image else "has neither text nor an image"


def _examples(ids: list[str]) -> str:
    more = f", … ({len(ids) - EXAMPLES} more)" if len(ids) > EXAMPLES else ""
    return ", ".join(repr(i) for i in ids[:EXAMPLES]) + more
