"""Results on disk: per-task Parquet and TREC run files, and the leaderboard Parquet."""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import PackageNotFoundError, version
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
    "provenance",
]


def model_dirname(model: str) -> str:
    """A file-system-safe folder name for a model label (hub ids and paths included)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "__", model).strip("_") or "model"


@cache
def git_sha() -> str | None:
    """The commit of the MRB checkout this code runs from, when it is one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def device_name(reranker: Any) -> str:
    """The accelerator a reranker runs on (its `device` attribute), named; else the CPU."""
    device = str(getattr(reranker, "device", "cpu"))
    torch = sys.modules.get("torch")
    if device.startswith("cuda") and torch is not None and torch.cuda.is_available():
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({platform.processor() or platform.machine()})"


def provenance(reranker: Any, settings: dict[str, Any], result: TaskResult, world_size: int = 1) -> dict[str, Any]:
    """Where a result comes from: versions, git sha, device, dtype, timings and what was scored or reused."""
    from mrb import __version__

    return {
        "mrb_version": __version__,
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "device": device_name(reranker),
        "dtype": settings.get("dtype"),
        "processes": world_size,
        **result.stats.as_dict(),
    }


def leaderboard_row(
    model: str, result: TaskResult, settings: dict[str, Any], version: str, provenance: dict[str, Any] | None = None
) -> dict[str, Any]:
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
        "provenance": json.dumps(provenance or {}, sort_keys=True, default=str),
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
