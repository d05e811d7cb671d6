"""Results on disk: per-task Parquet and TREC run files, and the leaderboard Parquet."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from mrb.data import atomic_write_bytes, atomic_write_parquet
from mrb.errors import MRBError
from mrb.runner import TaskResult

LEADERBOARD_FILE = "leaderboard.parquet"
LEADERBOARD_COLUMNS = [
    "model", "task", "type", "category", "metric", "value", "first_stage_value", "n_queries", "status",
    "mrb_version", "timestamp", "depth", "pack_hash", "n_no_relevant", "n_no_qrels", "seconds", "settings",
]


def model_dirname(model: str) -> str:
    """A file-system-safe folder name for a model label (hub ids and paths included)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "__", model).strip("_") or "model"


def leaderboard_row(model: str, result: TaskResult, settings: dict[str, Any], version: str) -> dict[str, Any]:
    task = result.task
    return {
        "model": model,
        "task": task.name,
        "type": task.type.label,
        "category": task.category.value,
        "metric": task.metric,
        "value": result.value,
        "first_stage_value": result.first_stage_value,
        "n_queries": 0 if result.per_query is None else len(result.per_query),
        "status": result.status,
        "mrb_version": version,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "depth": task.depth,
        "pack_hash": result.pack_hash,
        "n_no_relevant": result.n_no_relevant,
        "n_no_qrels": result.n_no_qrels,
        "seconds": round(result.seconds, 3),
        "settings": json.dumps(settings, sort_keys=True, default=str),
    }


def write_task_outputs(results_dir: Path, model: str, result: TaskResult) -> None:
    """`<results>/<model>/<task>.parquet` (per-query values) and `<task>.trec` (the reranked run)."""
    if result.per_query is None or result.ranking is None:
        return
    folder = results_dir / model_dirname(model)
    per_query = result.per_query.assign(metric=result.task.metric)[["query_id", "metric", "value", "first_stage_value"]]
    atomic_write_parquet(folder / f"{result.task.name}.parquet", pa.Table.from_pandas(per_query, preserve_index=False))
    tag = model_dirname(model)
    lines = [
        f"{q} Q0 {d} {r} {s!r} {tag}\n"
        for q, d, r, s in zip(result.ranking["query_id"], result.ranking["doc_id"], result.ranking["rank"], result.ranking["score"])
    ]
    atomic_write_bytes(folder / f"{result.task.name}.trec", "".join(lines).encode())


def read_leaderboard(results_dir: str | Path) -> pd.DataFrame:
    path = Path(results_dir) / LEADERBOARD_FILE
    if not path.is_file():
        raise MRBError(f"no results in {results_dir}: {LEADERBOARD_FILE} is missing (run `mrb run` first)")
    frame = pd.read_parquet(path)
    missing = [c for c in LEADERBOARD_COLUMNS if c not in frame.columns]
    if missing:
        raise MRBError(f"{path}: not an MRB leaderboard (missing column(s) {', '.join(missing)})")
    return frame


def update_leaderboard(results_dir: Path, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Insert or replace the rows for (model, task) in `<results>/leaderboard.parquet`."""
    path = results_dir / LEADERBOARD_FILE
    new = pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)
    if path.is_file():
        old = read_leaderboard(results_dir)
        keys = set(zip(new["model"], new["task"]))
        old = old[[k not in keys for k in zip(old["model"], old["task"])]]
        new = pd.concat([old, new], ignore_index=True) if len(old) else new
    atomic_write_parquet(path, pa.Table.from_pandas(new, preserve_index=False))
    return new
