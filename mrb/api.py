"""The Python entry point: `evaluate(model, tasks)` runs a reranker and returns the leaderboard rows."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd

from mrb.lock import ResultsLock
from mrb.distributed import World, init_world
from mrb.errors import MRBError
from mrb.identity import ModelIdentity, identify
from mrb.leaderboard import (
    LEADERBOARD_COLUMNS,
    LEADERBOARD_FILE,
    check_model_folder,
    leaderboard_row,
    provenance,
    read_leaderboard,
    remove_model,
    update_leaderboard,
    write_task_outputs,
)
from mrb.progress import RunProgress, RunStats
from mrb.rerankers import Reranker, as_reranker, get_reranker
from mrb.runner import Overwrite, RunOptions, TaskResult, run_task
from mrb.tasks import load_tasks

log = logging.getLogger(__name__)


def evaluate(
    model: Any,
    tasks: str = "mini",
    *,
    output_dir: str | Path | None = None,
    batch_size: int = 32,
    max_batch_tokens: int | None = None,
    workers: int = 1,
    overwrite: Overwrite = "missing",
    cache_dir: str | Path | None = None,
    image_cache_mb: int = 1024,
    adapter: str | None = None,
    task_dirs: list[str | Path] | None = None,
    data_dir: str | Path | None = None,
    quiet: bool = False,
    name: str | None = None,
    version: str | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Rerank the selected tasks with `model` and return one leaderboard row per task.

    `model` is a preset name (see `mrb models`), a checkpoint folder with `adapter`, a
    `Reranker`, or a callable ``f(pairs) -> scores``. With `output_dir`, per-task Parquet and
    TREC run files and ``leaderboard.parquet`` are written there as each task finishes, the
    folder is locked against a second run, and scores are cached under ``<output_dir>/cache``
    (or `cache_dir`) so that an interrupted run resumes. `overwrite`: ``never`` keeps tasks that
    already have results, ``missing`` scores only pairs the cache lacks, ``always`` rescores.
    Under ``torchrun`` the queries are split across the processes; rank 0 returns the rows.
    Packs of hub tasks are looked up in `data_dir` (default ``$MRB_DATA_DIR``, else ``~/.cache/mrb``).

    Results and cached scores belong to the model's identity (`mrb.identity`): `name` labels the model
    (default: the preset, the checkpoint, or the object's or function's own name) and `version` marks a
    state MRB cannot fingerprint. A results folder refuses a different model under a name it already
    holds unless ``overwrite="always"``, which replaces that model's results.
    """
    run_options = RunOptions(
        batch_size=batch_size, max_batch_tokens=max_batch_tokens, workers=workers, overwrite=overwrite,
        cache_dir=Path(cache_dir) if cache_dir is not None else Path(output_dir) / "cache" if output_dir is not None else None,
        image_cache_mb=image_cache_mb,
    )
    specs = load_tasks(tasks, task_dirs=task_dirs)
    if isinstance(model, str):
        reranker = get_reranker(model, adapter=adapter, **options)
        if name is not None or version is not None:
            reranker = as_reranker(reranker, name=name, version=version)
    elif options or adapter:
        raise MRBError("options and adapter apply to a preset name or checkpoint folder, not to a reranker object")
    else:
        reranker = as_reranker(model, name=name, version=version)
    settings = reranker.settings()
    identity = identify(reranker)
    if identity.unproven:
        log.warning("%s; until then its scores are not cached", identity.advice())
    results_dir = Path(output_dir) if output_dir is not None else None
    world = init_world()
    rows = []
    total = RunStats()
    with ExitStack() as stack:
        _lock(stack, results_dir, identity, world, replace=overwrite == "always")
        finished = _finished_rows(results_dir, reranker.name, world) if overwrite == "never" else {}
        progress = None if quiet or not world.is_main else stack.enter_context(RunProgress(len(specs)))
        for spec in specs:
            if spec.name in finished:
                log.info("%s on %s: kept from %s (--overwrite never)", reranker.name, spec.name, results_dir)
                rows.append(finished[spec.name])
            else:
                result = run_task(spec, reranker, identity=identity, options=run_options, progress=progress, world=world,
                                  data_dir=data_dir)
                total.add(result.stats)
                if world.is_main:
                    rows.append(_record(results_dir, reranker, identity, settings, result, world))
            if progress is not None:
                progress.finish_task()
    if world.is_main:
        log.info("%s: %s", reranker.name, total.summary())
        if progress is not None:
            progress.console.print(f"[bold]{reranker.name}[/bold]: {total.summary()}", soft_wrap=True)
    return pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)


def _record(results_dir: Path | None, reranker: Reranker, identity: ModelIdentity, settings: dict[str, Any],
            result: TaskResult, world: World) -> dict[str, Any]:
    """The task's leaderboard row, written with the task's outputs when there is a results folder."""
    from mrb import __version__

    row = leaderboard_row(identity, result, settings, __version__, provenance(reranker, settings, result, world.size))
    if results_dir is not None:
        write_task_outputs(results_dir, identity.name, result)
        update_leaderboard(results_dir, [row])
    log.info("%s on %s: %s", identity.name, result.task.name, row["value"] if result.status == "ok" else result.status)
    return row


def _lock(stack: ExitStack, results_dir: Path | None, identity: ModelIdentity, world: World, *, replace: bool) -> None:
    """Rank 0 locks the results folder and checks that `identity` may write there (with `replace`, a different
    model under its name is removed first); every rank fails with its message when either is refused."""
    error = None
    if results_dir is not None and world.is_main:
        try:
            stack.enter_context(ResultsLock(results_dir))
            if check_model_folder(results_dir, identity, replace=replace):
                log.warning("%s: replacing the results of a different model of that name in %s (--overwrite always)",
                            identity.name, results_dir)
                remove_model(results_dir, identity.name)
        except MRBError as exc:
            error = str(exc)
    error = world.broadcast(error)
    if error:
        raise MRBError(error)


def _finished_rows(results_dir: Path | None, model: str, world: World) -> dict[str, dict[str, Any]]:
    """Rows of tasks this model already finished in `results_dir` (rank 0 reads, all ranks get them)."""
    found: dict[str, dict[str, Any]] = {}
    if results_dir is not None and world.is_main and (results_dir / LEADERBOARD_FILE).is_file():
        board = read_leaderboard(results_dir)
        found = {row["task"]: row for row in board[board["model"] == model].to_dict("records")}
    return world.broadcast(found)
