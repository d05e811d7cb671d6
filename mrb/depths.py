"""The depth ablation from one pass: the values of shallower depths from the cached scores of the deepest run.

A run at depth D caches a score for every candidate of first-stage rank ≤ D. Reranking only the top
d ≤ D (the rest following in first-stage order) needs no new score: the `TaskEvaluator` of the task
at depth d evaluates the cached scores of its candidates, so each depth's values are exactly those of
a run at that depth. A missing score, a pack that changed or a task whose rules changed since the run
is refused by name, never filled in.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mrb.cache import ScoreCache, task_key
from mrb.errors import MRBError
from mrb.evaluation import TaskEvaluator, combine, metric_settings
from mrb.identity import ModelIdentity
from mrb.results import LEADERBOARD_COLUMNS, Status, TaskScores
from mrb.scored import result_task, scored_packs
from mrb.tasks import TaskSpec

LISTWISE_DEPTHS = (
    "a listwise model's ranking of the top d is not a cut of its ranking of the whole list (its windows see other "
    "candidates), so depths cannot come from one pass: run the task at each depth (its YAML's depth) instead"
)


def parse_depths(text: str) -> list[int]:
    """``10,25,50,100`` → [10, 25, 50, 100] (sorted, each once); anything else is an error naming it."""
    try:
        depths = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        depths = []
    if not depths or depths[0] < 1:
        raise MRBError(f"--depths {text!r}: give positive whole numbers separated by commas, e.g. 10,25,50,100")
    return depths


def check_depths(specs: Sequence[TaskSpec], depths: Sequence[int]) -> list[int]:
    """`depths` sorted, each once; refused before anything is scored when one is not positive or is deeper than a
    task reranks (its scores would never exist)."""
    chosen = sorted({int(d) for d in depths})
    if not chosen or chosen[0] < 1:
        raise MRBError(f"depths {list(depths)}: give positive whole numbers, e.g. [10, 25, 50, 100]")
    for spec in specs:
        if chosen[-1] > spec.depth:
            raise MRBError(
                f"depth {chosen[-1]} is deeper than task {spec.name} reranks ({spec.depth}): "
                "the depths come from the scores of one run at the task's depth"
            )
    return chosen


def depth_scores(
    row: dict[str, Any],
    depths: Sequence[int],
    *,
    cache_dir: Path,
    evaluators: list[TaskEvaluator],
    spec: TaskSpec,
) -> dict[int, TaskScores]:
    """One (model, task) leaderboard row's scores reranked to each of `depths`, from the score cache under
    `cache_dir`; `evaluators` are the task's units at the row's depth, over the packs it was scored on."""
    model, task, deepest = row["model"], row["task"], int(row["depth"])
    where = f"model {model!r} on task {task}"
    if max(depths) > deepest:
        raise MRBError(f"{where} reranked the top {deepest} only: the scores of depth {max(depths)} were never computed")
    stored, now = json.loads(row["metric_settings"]), metric_settings(spec.model_copy(update={"depth": deepest}))
    if now != stored:
        differing = sorted(k for k in now.keys() | stored.keys() if now.get(k) != stored.get(k))
        raise MRBError(f"{where}: the task's YAML no longer gives the rules of the results ({', '.join(differing)} differ)")
    ranked = json.loads(row["provenance"])
    if ranked.get("windows", 0) + ranked.get("window_cache_hits", 0):  # the run ranked windows, not pairs
        raise MRBError(f"{where}: {LISTWISE_DEPTHS}")
    identity = ModelIdentity.from_json(row["identity"])
    if identity.digest is None:
        raise MRBError(f"{where}: MRB could not fingerprint the model ({identity.unproven}), so its scores were not cached")
    parts: dict[int, list[TaskScores]] = {depth: [] for depth in depths}
    for full in evaluators:
        cache = ScoreCache(cache_dir, identity, task_key(full.task, full.pack))
        known = cache.load().scores
        for depth in depths:
            evaluator = full.at_depth(depth)
            pairs = list(zip(evaluator.candidates["query_id"], evaluator.candidates["doc_id"]))
            missing = [pair for pair in pairs if pair not in known]
            if missing:
                query, doc = missing[0]
                raise MRBError(
                    f"{where}: {len(missing)} of the {len(pairs)} pairs of depth {depth} have no score in the cache "
                    f"{cache.folder} (first: query {query!r}, document {doc!r}); run the model on the task into its "
                    "results folder again (it scores only the pairs the cache lacks)"
                )
            parts[depth].append(evaluator.evaluate(np.array([known[pair] for pair in pairs], dtype=np.float64)))
    out = {}
    for depth, evaluated in parts.items():
        scores = combine(spec.model_copy(update={"depth": depth}), evaluated) if spec.parts else evaluated[0]
        out[depth] = replace(
            scores,
            model=model,
            identity=identity,
            settings=json.loads(row["settings"]),
            provenance=json.loads(row["provenance"]),
            adapted=row["adapted"] or "",
            mrb_version=row["mrb_version"],
            timestamp=row["timestamp"],
        )
    return out


def depth_board(
    board: pd.DataFrame,
    depths: Sequence[int],
    *,
    cache_dir: Path | None = None,
    task_dirs: list[str | Path] | None = None,
    data_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Leaderboard rows, one per (model, task, depth) of `board`, in depth order (an unsupported task stays
    unsupported at every depth). Scores come from `cache_dir`, by default each row's ``<results_dir>/cache``."""
    by_depth: dict[int, list[dict[str, Any]]] = {depth: [] for depth in depths}
    read: dict[tuple[str, str, int], tuple[TaskSpec, list[TaskEvaluator]]] = {}  # each task's packs, read once
    for row in board.to_dict("records"):
        if row["status"] != Status.OK:
            for depth in depths:
                by_depth[depth].append({**row, "depth": depth})
            continue
        key = (row["task"], row["pack_hash"], int(row["depth"]))
        if key not in read:
            spec = result_task(row["task"], task_dirs)
            at = {"depth": int(row["depth"])}
            read[key] = (
                spec,
                [TaskEvaluator(unit.model_copy(update=at), pack) for unit, pack in scored_packs(spec, row, data_dir)],
            )
        spec, evaluators = read[key]
        cache = cache_dir if cache_dir is not None else Path(row["results_dir"]) / "cache"
        kept = {"results_dir": row["results_dir"]} if "results_dir" in row else {}
        for depth, scores in depth_scores(row, depths, cache_dir=cache, evaluators=evaluators, spec=spec).items():
            by_depth[depth].append({**scores.row(), **kept})
    columns = LEADERBOARD_COLUMNS + (["results_dir"] if "results_dir" in board.columns else [])
    return pd.DataFrame([row for depth in depths for row in by_depth[depth]], columns=columns)
