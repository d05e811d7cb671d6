"""The Python entry point: `evaluate(model, tasks)` runs a reranker and returns the leaderboard rows."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from mrb.errors import MRBError
from mrb.leaderboard import LEADERBOARD_COLUMNS, leaderboard_row, update_leaderboard, write_task_outputs
from mrb.rerankers import as_reranker, get_reranker
from mrb.runner import progress_bar, run_task
from mrb.tasks import load_tasks

log = logging.getLogger(__name__)


def evaluate(
    model: Any,
    tasks: str = "mini",
    *,
    output_dir: str | Path | None = None,
    batch_size: int = 32,
    adapter: str | None = None,
    task_dirs: list[str | Path] | None = None,
    data_dir: str | Path | None = None,
    quiet: bool = False,
    **options: Any,
) -> pd.DataFrame:
    """Rerank the selected tasks with `model` and return one leaderboard row per task.

    `model` is a preset name (see `mrb models`), a checkpoint folder with `adapter`, a
    `Reranker`, or a callable ``f(pairs) -> scores``. With `output_dir`, per-task Parquet and
    TREC run files and ``leaderboard.parquet`` are written there as each task finishes. Packs of
    hub tasks are looked up in `data_dir` (default ``$MRB_DATA_DIR``, else ``~/.cache/mrb``).
    """
    from mrb import __version__

    if batch_size < 1:
        raise MRBError(f"batch size must be at least 1, got {batch_size}")
    specs = load_tasks(tasks, task_dirs=task_dirs)
    if isinstance(model, str):
        reranker = get_reranker(model, adapter=adapter, **options)
    elif options or adapter:
        raise MRBError("options and adapter apply to a preset name or checkpoint folder, not to a reranker object")
    else:
        reranker = as_reranker(model)
    settings = reranker.settings()
    results_dir = Path(output_dir) if output_dir is not None else None
    rows = []
    with progress_bar(quiet) as progress:
        for spec in specs:
            result = run_task(spec, reranker, batch_size=batch_size, progress=progress, data_dir=data_dir)
            row = leaderboard_row(reranker.name, result, settings, __version__)
            rows.append(row)
            if results_dir is not None:
                write_task_outputs(results_dir, reranker.name, result)
                update_leaderboard(results_dir, [row])
            log.info("%s on %s: %s", reranker.name, spec.name, row["value"] if result.status == "ok" else result.status)
    return pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)
