"""The Python entry point: `evaluate(model, tasks)` runs a reranker (a `Session`) and returns the leaderboard rows."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pandas as pd

from mrb.errors import MRBError
from mrb.runner import RunOptions
from mrb.session import Session
from mrb.tasks import load_tasks

RUN_OPTIONS = frozenset(f.name for f in fields(RunOptions))


def evaluate(
    model: Any,
    tasks: str = "mini",
    *,
    output_dir: str | Path | None = None,
    adapter: str | None = None,
    name: str | None = None,
    version: str | None = None,
    task_dirs: list[str | Path] | None = None,
    data_dir: str | Path | None = None,
    build_missing: bool = False,
    quiet: bool = False,
    dry_run: bool = False,
    fallback: str | None = None,
    depths: Sequence[int] | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Rerank the selected tasks with `model` and return one leaderboard row per task.

    Args:
        model: a preset name (see `mrb models`), a checkpoint folder or hub id with `adapter`, a `Reranker`,
            an object with a ``score(pairs)`` method, or a callable ``f(pairs) -> scores``.
        tasks: a selection: ``all``, task names, globs, type codes (``t2i``), categories or suites (``mini``).
        output_dir: where per-task Parquet and TREC files and ``leaderboard.parquet`` are written as each task
            finishes; the folder is locked against a second run, and scores are cached under
            ``<output_dir>/cache`` (or `cache_dir`) so that an interrupted run resumes. None: nothing written.
        adapter: the adapter that loads `model` when it is a checkpoint.
        name, version: the model's name and a version marking a state MRB cannot fingerprint; together with
            what decides its scores they are its identity (`mrb.identity`). A results folder refuses a
            different model under a name it holds unless ``overwrite="always"``, which replaces its results.
        task_dirs: folders of task YAML added to the bundled catalogue.
        data_dir: where source mirrors and packs live (default ``$MRB_DATA_DIR``, else ``~/.cache/mrb``).
        build_missing: build missing candidate packs with each task's first stage first.
        quiet: no progress bars.
        dry_run: check the packs and print the plan (pairs, cached pairs, time, disk), score nothing.
        fallback: ``image-only`` or ``text-only``: feed an image+text side the model lacks as its image or its text
            (and let a preset that can adapt itself take more sides); off by default, and every adapted result
            says so in ``adapted`` (`mrb.rerankers.fallback`).
        depths: the depth ablation from one pass: the tasks are run at their depth, then each of `depths` (at most
            a task's depth) is evaluated from the cached scores, reranking only the top d of the first stage
            (`mrb.depths`); the score cache is `cache_dir`, ``<output_dir>/cache`` or a temporary folder.
        **options: the runner's options (`RunOptions`: batch_size, max_batch_tokens, workers, overwrite,
            cache_dir, image_cache_mb), and for a preset or checkpoint the adapter's options (device, dtype, …).

    Returns:
        The leaderboard rows (`mrb.results.LEADERBOARD_COLUMNS`), one per task (with `depths`, one per task and
        depth, in depth order); under ``torchrun`` the queries are split across the processes and rank 0 returns
        the rows (the others an empty frame).
    """
    run = {k: options.pop(k) for k in list(options) if k in RUN_OPTIONS}
    if run.get("cache_dir") is not None:
        run["cache_dir"] = Path(run["cache_dir"])
    session = Session(
        model,
        tasks,
        RunOptions(**run),
        output_dir=Path(output_dir) if output_dir is not None else None,
        adapter=adapter,
        name=name,
        version=version,
        model_options=options,
        task_dirs=task_dirs,
        data_dir=data_dir,
        build_missing=build_missing,
        quiet=quiet,
        dry_run=dry_run,
        fallback=fallback,
    )
    if depths is None:
        return session.run()
    return _depth_ablation(session, depths)


def _depth_ablation(session: Session, depths: Sequence[int]) -> pd.DataFrame:
    """Run `session` once and evaluate each of `depths` from its cached scores (`mrb.depths`)."""
    from mrb.depths import LISTWISE_DEPTHS, check_depths, depth_board

    if _listwise(session.model, session.adapter):
        raise MRBError(f"depths: {LISTWISE_DEPTHS}")
    chosen = check_depths(load_tasks(session.tasks, task_dirs=session.task_dirs), depths)
    with tempfile.TemporaryDirectory(prefix="mrb-scores-") as scratch:
        cache = session.options.cache_dir or (session.output_dir / "cache" if session.output_dir else Path(scratch))
        board = replace(session, options=replace(session.options, cache_dir=cache)).run()
        return depth_board(board, chosen, cache_dir=cache, task_dirs=session.task_dirs, data_dir=session.data_dir)


def _listwise(model: Any, adapter: str | None) -> bool:
    """Whether `model` (a preset name, checkpoint or object) is a listwise reranker."""
    from mrb.rerankers.base import ListwiseReranker, resolve_adapter
    from mrb.rerankers.presets import PRESETS

    if not isinstance(model, str):
        return isinstance(model, ListwiseReranker)
    name = adapter or (PRESETS[model].adapter if model in PRESETS else None)
    found = resolve_adapter(name) if name is not None else None
    return isinstance(found, type) and issubclass(found, ListwiseReranker)
