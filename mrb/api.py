"""The Python entry point: `evaluate(model, tasks)` runs a reranker (a `Session`) and returns the leaderboard rows."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd

from mrb.runner import RunOptions
from mrb.session import Session

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
        **options: the runner's options (`RunOptions`: batch_size, max_batch_tokens, workers, overwrite,
            cache_dir, image_cache_mb), and for a preset or checkpoint the adapter's options (device, dtype, …).

    Returns:
        The leaderboard rows (`mrb.results.LEADERBOARD_COLUMNS`), one per task; under ``torchrun`` the queries are
        split across the processes and rank 0 returns the rows (the others an empty frame).
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
    return session.run()
