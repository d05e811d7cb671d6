"""A run's plan, made before any model loads: every pack present (or one error naming the missing ones
and the command that makes them), and per task the pairs to score (a listwise model's windows), those
already in the score cache, the time that leaves at a measured rate, and the disk it needs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from mrb.cache import ScoreCache, task_key
from mrb.data import PACK_FILES, Pack
from mrb.errors import MRBError
from mrb.evaluation import TaskEvaluator
from mrb.identity import ModelIdentity
from mrb.rerankers.base import ListwiseReranker
from mrb.tasks import TaskSpec, resolve_data_dir

BYTES_PER_PAIR = 120  # a cached score (two ids, a float, batch framing) plus its per-query and TREC lines, about
SHOWN = 5  # task names quoted in a message


def check_packs(specs: list[TaskSpec], selection: str, data_dir: str | Path | None, task_dirs: list[str | Path] | None) -> None:
    """An `MRBError` naming every task without its pack, and the one command that builds them."""
    missing = [(task, unit) for task in specs for unit in task.units() if not unit.pack_location(data_dir).is_dir()]
    if not missing:
        return
    declared = next((unit for _, unit in missing if unit.pack is not None), None)
    names = list(dict.fromkeys(task.name for task, _ in missing))
    if declared is not None or len(names) == 1:
        (declared or missing[0][1]).pack_path(data_dir)  # raises, naming the folder and the command for this one task
    chosen = selection if len(names) == len(specs) else ",".join(names)
    stages = {unit.first_stage for _, unit in missing}
    retriever = f" --retriever {stages.pop()}" if len(stages) == 1 and None not in stages else ""
    folders = "".join(f" --task-dir {d}" for d in task_dirs or [])
    data = f" --data-dir {data_dir}" if data_dir is not None else ""
    shown = ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")
    raise MRBError(
        f"{len(names)} tasks have no candidate pack yet in {resolve_data_dir(data_dir) / 'packs'}: {shown}; build them with "
        f"`mrb candidates build --tasks {chosen}{folders}{retriever}{data}` (a GPU machine: docs/candidates.md), fetch "
        f"published ones with `mrb candidates pull --repo REPO --tasks {chosen}{folders}{data}`, or pass --build-missing "
        "to `mrb run`"
    )


@dataclass(frozen=True)
class TaskPlan:
    task: str
    type: str
    total: int  # the pairs a run scores (judged queries, within the depth), or a listwise model's windows
    cached: int  # of those, already in the score cache

    @property
    def left(self) -> int:
        return self.total - self.cached


@dataclass(frozen=True)
class Plan:
    model: str
    tasks: list[TaskPlan]
    rate: float | None  # pairs/s of this model on this device, when one was measured
    rate_source: str
    unsupported: list[str]  # the selected tasks whose sides the model does not take
    unit: str = "pairs"  # what the counts and the rate count: "pairs", or a listwise model's "windows"
    bytes_each: int = BYTES_PER_PAIR  # the disk one of them takes

    @property
    def left(self) -> int:
        return sum(t.left for t in self.tasks)

    def render(self) -> str:
        """The plan as a table and three lines: what is left, how long it takes, and the disk it needs."""
        width = max([len(t.task) for t in self.tasks] + [5])
        skipped = f"; unsupported (its sides): {', '.join(self.unsupported)}" if self.unsupported else ""
        lines = [f"plan of {self.model}: {len(self.tasks)} task{'s' if len(self.tasks) != 1 else ''}{skipped}"]
        lines.append(f"{'task':<{width}}  {'type':<6}{self.unit:>12}{'cached':>12}{'to score':>12}")
        for t in self.tasks:
            lines.append(f"{t.task:<{width}}  {t.type:<6}{t.total:>12,}{t.cached:>12,}{t.left:>12,}")
        total, cached = sum(t.total for t in self.tasks), sum(t.cached for t in self.tasks)
        lines.append(f"{'total':<{width}}  {'':<6}{total:>12,}{cached:>12,}{self.left:>12,}")
        if self.left == 0:
            lines.append(f"nothing to score: every {self.unit[:-1]} is in the score cache, so the model will not be loaded")
            return "\n".join(lines)
        if self.rate:
            lines.append(f"time: about {_duration(self.left / self.rate)} at {self.rate:,.1f} {self.unit}/s ({self.rate_source})")
        else:
            lines.append(f"time: unknown ({self.rate_source})")
        size = self.left * self.bytes_each
        shown = f"{size / 2**20:,.1f} MiB" if size >= 2**20 else f"{size / 2**10:,.0f} KiB"
        lines.append(f"disk: about {shown} for the score cache and the result files")
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:,.1f} h ({seconds / 86400:,.1f} days on one device)"


def task_plan(
    task: TaskSpec,
    data_dir: str | Path | None,
    identity: ModelIdentity,
    cache_root: Path | None,
    listwise: ListwiseReranker | None = None,
) -> TaskPlan:
    """A task's pairs and cached pairs (a `listwise` model's windows and cached windows), from its pack's candidate
    lists and judgements alone (no records, no images)."""
    total = cached = 0
    for unit in task.units():
        folder = unit.pack_path(data_dir)
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        frames = {
            name: pq.read_table(folder / f"{name}.parquet", columns=PACK_FILES[name].names).to_pandas()
            for name in ("candidates", "qrels")
        }
        lists = Pack(folder, {}, {}, frames["candidates"], frames["qrels"], manifest)
        candidates = TaskEvaluator(unit, lists).candidates
        known: dict[tuple[str, str], float] = {}
        if cache_root is not None and identity.digest is not None:
            known = ScoreCache(cache_root, identity, task_key(unit, lists)).load().scores
        if listwise is not None:
            from mrb.listwise import cached_windows  # it builds on the runner, which a plan does not need

            windows, hits = cached_windows(candidates, listwise, known)
            total, cached = total + windows, cached + hits
        else:
            total += len(candidates)
            cached += sum((q, d) in known for q, d in zip(candidates["query_id"], candidates["doc_id"]))
    return TaskPlan(task.name, task.type.label, total, cached)
