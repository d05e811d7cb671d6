"""What a stored result was computed on: its task's spec and packs, found again and checked against the result.

The depth ablation and the HTML explorer read the packs behind a leaderboard row; they must be the
packs the model was scored on (the row's `pack_hash`), from a task whose spec the catalogue (and the
user's ``--task-dir`` folders) still holds. Anything else is refused by name, never guessed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mrb.data import Pack, read_pack
from mrb.errors import MRBError
from mrb.evaluation import pack_hash, parts_hash
from mrb.tasks import TaskSpec, load_tasks


def result_task(task: str, task_dirs: list[str | Path] | None = None) -> TaskSpec:
    """The spec of a task named in a results folder."""
    try:
        (spec,) = load_tasks(task, task_dirs=task_dirs)
    except MRBError as exc:
        raise MRBError(f"task {task} of the results: {exc} (a task of your own needs its folder: --task-dir)") from None
    return spec


def scored_packs(spec: TaskSpec, row: dict[str, Any], data_dir: str | Path | None = None) -> list[tuple[TaskSpec, Pack]]:
    """Each unit of `spec` (the task, or its parts) with its pack, refused unless the packs are those the leaderboard
    `row` was computed on."""
    packs = [(unit, read_pack(unit.pack_path(data_dir))) for unit in spec.units()]
    read_now = parts_hash([pack_hash(pack) for _, pack in packs]) if spec.parts else pack_hash(packs[0][1])
    if read_now != row["pack_hash"]:
        raise MRBError(
            f"model {row['model']!r} on task {spec.name}: the pack read now (hash {read_now}) is not the one the model was "
            f"scored on ({row['pack_hash']}); rebuild that pack or rerun the model"
        )
    return packs
