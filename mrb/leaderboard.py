"""Results on disk: per-task Parquet and TREC run files, and the leaderboard Parquet."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mrb.errors import MRBError
from mrb.identity import ModelIdentity
from mrb.io import atomic_write_bytes, atomic_write_parquet, contained, read_parquet_table, safe_filename
from mrb.metrics import MEASURE_COLUMNS, tie_free_scores
from mrb.runner import TaskResult
from mrb.stats import BOOTSTRAP_RESAMPLES, CONFIDENCE, SEED, bootstrap_ci
from mrb.tasks import TaskSpec

LEADERBOARD_FILE = "leaderboard.parquet"
LEADERBOARD_COLUMNS = [
    "model", "task", "type", "category", "metric", "value", "first_stage_value", "ci_low", "ci_high", *MEASURE_COLUMNS,
    "metric_settings", "n_queries", "status",
    "mrb_version", "timestamp", "depth", "pack_hash", "n_no_relevant", "n_no_qrels", "seconds", "settings",
    "identity", "provenance",
]


def model_dirname(model: str) -> str:
    """The folder of a model's result files: its name as one safe path component (hub ids and paths included)."""
    return safe_filename(model)


def result_path(results_dir: Path, model: str, task: str, suffix: str) -> Path:
    """`<results>/<model folder>/<task><suffix>`, refused if a name from the data would leave the folder."""
    return contained(Path(results_dir), model_dirname(model), f"{safe_filename(task)}{suffix}")


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
    identity: ModelIdentity, result: TaskResult, settings: dict[str, Any], version: str, provenance: dict[str, Any] | None = None
) -> dict[str, Any]:
    task = result.task
    return {
        "model": identity.name,
        "task": task.name,
        "type": task.type.label,
        "category": task.category.value,
        "metric": task.metric,
        "value": result.value,
        "first_stage_value": result.first_stage_value,
        **metric_fields(result),
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
        "identity": identity.to_json(),
        "provenance": json.dumps(provenance or {}, sort_keys=True, default=str),
    }


def write_task_outputs(results_dir: Path, model: str, result: TaskResult) -> None:
    """`<results>/<model>/<task>.parquet` (per-query values) and `<task>.trec` (the reranked run, its scores
    strictly decreasing in MRB's order, so tools that sort by score see MRB's ranking)."""
    if result.per_query is None or result.ranking is None:
        return
    parts = [p.task.name for p in result.parts for _ in range(len(p.per_query))] if result.parts else ""
    per_query = result.per_query.assign(metric=result.task.metric, part=parts)[
        ["query_id", "part", "metric", "value", "first_stage_value", *MEASURE_COLUMNS]
    ]
    atomic_write_parquet(result_path(results_dir, model, result.task.name, ".parquet"), pa.Table.from_pandas(per_query, preserve_index=False))
    tag = model_dirname(model)
    ranking = result.ranking
    scores = tie_free_scores(ranking).astype(np.float32)  # float32 values, written in their shortest form
    lines = [f"{q} Q0 {d} {r} {str(s)} {tag}\n" for q, d, r, s in zip(ranking["query_id"], ranking["doc_id"], ranking["rank"], scores)]
    atomic_write_bytes(result_path(results_dir, model, result.task.name, ".trec"), "".join(lines).encode())


def read_leaderboard(results_dir: str | Path) -> pd.DataFrame:
    path = Path(results_dir) / LEADERBOARD_FILE
    if not path.is_file():
        raise MRBError(f"no results in {results_dir}: {LEADERBOARD_FILE} is missing (run `mrb run` first)")
    frame = read_parquet_table(path, "the leaderboard rows").to_pandas()
    missing = [c for c in LEADERBOARD_COLUMNS if c not in frame.columns]
    if missing == ["identity"]:
        raise MRBError(
            f"{path} was written by MRB 0.1, whose results carry no model identity and count judged queries without a "
            "relevant document differently: rerun the models into a new results folder"
        )
    if missing:
        raise MRBError(f"{path}: not an MRB leaderboard (missing column(s) {', '.join(missing)})")
    return frame


def stored_identities(results_dir: Path) -> dict[str, ModelIdentity]:
    """The identity of every model with results in `results_dir` (none when it has no leaderboard)."""
    if not (results_dir / LEADERBOARD_FILE).is_file():
        return {}
    board = read_leaderboard(results_dir)
    return {model: ModelIdentity.from_json(text) for model, text in zip(board["model"], board["identity"])}


def check_model_folder(results_dir: Path, identity: ModelIdentity, *, replace: bool) -> bool:
    """Whether `identity` may write its results to `results_dir`: True when it may (a new model, or the same
    model again), or when `replace` is set and the model under its name differs (that model's rows and files
    must then go: `remove_model`). Refused, with an `MRBError` naming what differs: a different model under
    the same name without `replace`, and any model whose results folder another model's name maps to."""
    stored = stored_identities(results_dir)
    folder = model_dirname(identity.name)
    others = sorted(m for m in stored if m != identity.name and model_dirname(m) == folder)
    if others:
        raise MRBError(
            f"results folder {results_dir}: model {identity.name!r} would write to {folder}/, which holds the results of "
            f"model {others[0]!r}; rename the model or use another output folder"
        )
    old = stored.get(identity.name)
    if old is None or identity.same_model(old):
        return False
    if replace:
        return True
    fixes = "use another output folder, or pass --overwrite always to replace those results"
    if identity.unproven:
        raise MRBError(
            f"results folder {results_dir} holds results of a model named {identity.name!r}, and MRB cannot tell whether "
            f"this model is the same: {identity.unproven}; give this model its own name or a version, {fixes}"
        )
    if old.unproven:
        raise MRBError(
            f"results folder {results_dir} holds results of a model named {identity.name!r} that MRB could not fingerprint, "
            f"so it cannot tell whether this model is the same; give this model its own name, {fixes}"
        )
    raise MRBError(
        f"results folder {results_dir} holds results of another model named {identity.name!r} (they differ in "
        f"{', '.join(old.differences(identity))}); give this model its own name (or a new version), {fixes}"
    )


def remove_model(results_dir: Path, model: str) -> None:
    """Drop every leaderboard row and result file of `model` (before a different model takes its name)."""
    path = results_dir / LEADERBOARD_FILE
    if path.is_file():
        board = read_leaderboard(results_dir)
        atomic_write_parquet(path, pa.Table.from_pandas(board[board["model"] != model], preserve_index=False))
    folder = contained(results_dir, model_dirname(model))
    for file in list(folder.glob("*.parquet")) + list(folder.glob("*.trec")) if folder.is_dir() else []:
        file.unlink()


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


# ── metric fields of a leaderboard row ───────────────────────────────────────────────────


TIE_BREAK = "score desc, first-stage rank asc, doc id asc"


def metric_settings(task: TaskSpec) -> dict[str, Any]:
    """Everything besides the pack that decides a task's values; rows that differ here never mix."""
    return {
        "metric": task.metric,
        "measures": MEASURE_COLUMNS,
        "depth": task.depth,
        "ignore_identical_ids": task.ignore_identical_ids,
        "no_relevant": task.no_relevant,
        "tie_break": TIE_BREAK,
        "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "level": CONFIDENCE, "seed": SEED},
    }


def metric_fields(result: TaskResult) -> dict[str, Any]:
    """The main metric's 95% bootstrap CI, the task-level value of every other measure, and the metric settings."""
    units = result.parts or [result]
    low, high = (None, None) if result.per_query is None else bootstrap_ci([u.per_query["value"] for u in units])
    return {
        "ci_low": low,
        "ci_high": high,
        **{m: result._mean(m) for m in MEASURE_COLUMNS},  # over queries, or over parts for a composite
        "metric_settings": json.dumps(metric_settings(result.task), sort_keys=True),
    }


# ── reading several results folders, and the consistency guard ──────────────────────────


def read_leaderboards(results_dirs: list[str | Path]) -> pd.DataFrame:
    """The leaderboards of several results folders in one frame, with a `results_dir` column.

    A (model, task) pair found in two folders is an error: which one to report is not ours to guess.
    """
    frames = [read_leaderboard(d).assign(results_dir=str(d)) for d in results_dirs]
    board = pd.concat(frames, ignore_index=True)
    twice = board[board.duplicated(["model", "task"], keep=False)]
    if len(twice):
        first = twice.iloc[0]
        where = " and ".join(twice.loc[(twice["model"] == first["model"]) & (twice["task"] == first["task"]), "results_dir"])
        raise MRBError(f"model {first['model']!r} has results for task {first['task']} in both {where}; report those folders separately")
    return board


def _who_has(models: pd.Series, values: list[str]) -> str:
    """'a (m1, m2) vs b (m3)': each distinct value with the models that hold it."""
    groups = {v: [m for m, w in zip(models, values) if w == v] for v in dict.fromkeys(values)}
    return " vs ".join(f"{v} ({', '.join(held)})" for v, held in groups.items())


def mixed_results(board: pd.DataFrame) -> list[str]:
    """One line per task whose ok rows differ in pack hash or metric settings, naming what differs and for whom."""
    problems = []
    ok = board[board["status"] == "ok"]
    for task, rows in ok.groupby("task", sort=True):
        settings = [json.loads(s) for s in rows["metric_settings"]]
        fields = {"pack_hash": list(rows["pack_hash"])}
        for key in sorted({k for s in settings for k in s}):
            fields[key] = [json.dumps(s.get(key), sort_keys=True) for s in settings]
        differing = [f"{key} {_who_has(rows['model'], values)}" for key, values in fields.items() if len(set(values)) > 1]
        if differing:
            problems.append(f"{task}: " + "; ".join(differing))
    return problems


def guard_consistency(board: pd.DataFrame, *, allow_mixed: bool = False) -> list[str]:
    """Raise unless every task's results share one pack and one set of metric settings;
    with `allow_mixed`, return the differences as notes instead. Rows from different MRB
    versions are allowed, and noted."""
    problems = mixed_results(board)
    if problems and not allow_mixed:
        raise MRBError(
            "results computed on different packs or with different metric settings would be mixed:\n  "
            + "\n  ".join(problems)
            + "\nrerun the models on the same pack and settings, or pass --allow-mixed to report them anyway"
        )
    notes = [f"Mixed results (--allow-mixed), first-stage value from the first row: {p}" for p in problems]
    models = board.drop_duplicates(["model", "mrb_version"])
    if models["mrb_version"].nunique() > 1:
        notes.append(f"Results come from several MRB versions: {_who_has(models['model'], list(models['mrb_version']))}.")
    return notes


def read_per_query(results_dir: str | Path, model: str, task: str) -> pd.DataFrame:
    """The per-query Parquet of one (model, task), as written by `write_task_outputs`."""
    path = result_path(Path(results_dir), model, task, ".parquet")
    return read_parquet_table(path, f"the per-query values of {model!r} on {task}").to_pandas()
