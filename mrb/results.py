"""Results as typed objects and their storage: `TaskScores`, the results folder, `load_results`.

A results folder holds ``leaderboard.parquet`` (one row per model and task, `LEADERBOARD_COLUMNS`,
with a `schema_version`), and per model ``<model>/<task>.parquet`` (per-query values) and
``<model>/<task>.trec`` (the reranked run with tie-free scores). `TaskScores.write` writes all three
for one task, `TaskScores.read` and `load_results` read them back; a folder MRB cannot read (another
schema, a damaged file) is refused by name. One model name holds one model identity per folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from mrb.errors import MRBError
from mrb.identity import ModelIdentity
from mrb.io import atomic_write_bytes, atomic_write_parquet, contained, read_parquet_table, safe_filename
from mrb.metrics import MEASURE_COLUMNS, tie_free_scores

if TYPE_CHECKING:
    from mrb.runner import RunStats

SCHEMA_VERSION = 2  # 1: MRB 0.1 (no identity, judged queries without a relevant document dropped)
LEADERBOARD_FILE = "leaderboard.parquet"
LEADERBOARD_COLUMNS = [
    "model",
    "task",
    "type",
    "category",
    "metric",
    "value",
    "first_stage_value",
    "ci_low",
    "ci_high",
    *MEASURE_COLUMNS,
    "metric_settings",
    "n_queries",
    "status",
    "mrb_version",
    "timestamp",
    "depth",
    "pack_hash",
    "n_no_relevant",
    "n_no_qrels",
    "seconds",
    "settings",
    "identity",
    "provenance",
    "adapted",
    "no_signal",
    "schema_version",
]
PER_QUERY_COLUMNS = ["query_id", "part", "metric", "value", "first_stage_value", *MEASURE_COLUMNS]


class Status(StrEnum):
    """How a task went for a model: scored, or not taken because of its modalities (an empty cell, never 0)."""

    OK = "ok"
    UNSUPPORTED = "unsupported"


@dataclass
class TaskScores:
    """One model's values on one task.

    Attributes:
        task: the task's name.
        type, category, metric, depth: the task's type label (``T→T``), category, main metric and depth.
        status: `Status.OK` or `Status.UNSUPPORTED` (then there are no values).
        per_query: one row per evaluated query: query_id, part (a composite's part, else ""), value,
            first_stage_value and the other measures (`mrb.metrics.MEASURE_COLUMNS`).
        value, first_stage_value, measures: the task-level values (mean over queries, or over parts).
        no_signal: every candidate of every query got the same score, so `value` is the first stage's.
        adapted: the fallback that fed the model a side it lacks (``image-only``, ``text-only``), else "".
        ci: the 95% bootstrap interval of `value`; parts: each part's value for a composite task.
        metric_settings: everything besides the pack that decides the values (never mixed in a report).
        model, identity, settings, provenance: who scored it, filled in by the run.
        ranking: the reranked lists (in memory only; on disk as the TREC file).
    """

    task: str
    type: str
    category: str
    metric: str
    depth: int
    status: Status
    metric_settings: dict[str, Any]
    per_query: pd.DataFrame | None = None
    value: float | None = None
    first_stage_value: float | None = None
    measures: dict[str, float | None] = field(default_factory=dict)
    ci: tuple[float, float] | None = None
    parts: dict[str, float] = field(default_factory=dict)
    pack_hash: str = ""
    source_revision: str | None = None  # the pack's source: hub commit or local digest (a composite's parts comma-joined)
    n_no_relevant: int = 0
    n_no_qrels: int = 0
    no_signal: bool = False  # every candidate of every query got the same score: the values are the first stage's
    adapted: str = ""  # how a model that lacks a side of the task was fed it (a declared fallback), else ""
    seconds: float = 0.0
    model: str | None = None
    identity: ModelIdentity | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    mrb_version: str | None = None
    timestamp: str | None = None
    ranking: pd.DataFrame | None = field(default=None, repr=False)
    stats: RunStats | None = field(default=None, repr=False)

    @property
    def n_queries(self) -> int:
        return 0 if self.per_query is None else len(self.per_query)

    def stamped(self, identity: ModelIdentity, settings: dict[str, Any], provenance: dict[str, Any]) -> TaskScores:
        """These scores as the result of the model `identity` (what the run knows, the evaluator does not)."""
        from mrb import __version__

        return replace(
            self,
            model=identity.name,
            identity=identity,
            settings=settings,
            provenance=provenance,
            mrb_version=__version__,
            timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def row(self) -> dict[str, Any]:
        """The leaderboard row (JSON in the nested columns)."""
        assert self.identity is not None, "stamped() first"
        low, high = self.ci if self.ci is not None else (None, None)
        return {
            "model": self.model,
            "task": self.task,
            "type": self.type,
            "category": self.category,
            "metric": self.metric,
            "value": self.value,
            "first_stage_value": self.first_stage_value,
            "ci_low": low,
            "ci_high": high,
            **{m: self.measures.get(m) for m in MEASURE_COLUMNS},
            "metric_settings": json.dumps(self.metric_settings, sort_keys=True),
            "n_queries": self.n_queries,
            "status": str(self.status),
            "mrb_version": self.mrb_version,
            "timestamp": self.timestamp,
            "depth": self.depth,
            "pack_hash": self.pack_hash,
            "n_no_relevant": self.n_no_relevant,
            "n_no_qrels": self.n_no_qrels,
            "seconds": round(self.seconds, 3),
            "settings": json.dumps(self.settings, sort_keys=True, default=str),
            "identity": self.identity.to_json(),
            "provenance": json.dumps(self.provenance, sort_keys=True, default=str),
            "adapted": self.adapted,
            "no_signal": self.no_signal,
            "schema_version": SCHEMA_VERSION,
        }

    def write(self, folder: Path) -> None:
        """The per-query Parquet and the TREC run (when there are values), then the leaderboard row."""
        assert self.model is not None, "stamped() first"
        if self.per_query is not None and self.ranking is not None:
            table = self.per_query.assign(metric=self.metric)[PER_QUERY_COLUMNS]
            atomic_write_parquet(
                result_path(folder, self.model, self.task, ".parquet"), pa.Table.from_pandas(table, preserve_index=False)
            )
            write_trec(result_path(folder, self.model, self.task, ".trec"), self.ranking, model_dirname(self.model))
        update_leaderboard(folder, [self.row()])

    @classmethod
    def from_row(cls, row: dict[str, Any], per_query: pd.DataFrame | None = None) -> TaskScores:
        """A leaderboard row (and its per-query values) as TaskScores."""
        present = row["ci_low"] is not None and not pd.isna(row["ci_low"])
        return cls(
            task=row["task"],
            type=row["type"],
            category=row["category"],
            metric=row["metric"],
            depth=int(row["depth"]),
            status=Status(row["status"]),
            metric_settings=json.loads(row["metric_settings"]),
            per_query=per_query,
            value=_number(row["value"]),
            first_stage_value=_number(row["first_stage_value"]),
            measures={m: _number(row[m]) for m in MEASURE_COLUMNS},
            ci=(row["ci_low"], row["ci_high"]) if present else None,
            parts=_part_values(per_query),
            pack_hash=row["pack_hash"],
            n_no_relevant=int(row["n_no_relevant"]),
            n_no_qrels=int(row["n_no_qrels"]),
            no_signal=bool(row["no_signal"]),
            adapted=row["adapted"] or "",
            seconds=float(row["seconds"]),
            model=row["model"],
            identity=ModelIdentity.from_json(row["identity"]),
            settings=json.loads(row["settings"]),
            provenance=json.loads(row["provenance"]),
            mrb_version=row["mrb_version"],
            timestamp=row["timestamp"],
        )

    @classmethod
    def read(cls, folder: str | Path, model: str, task: str) -> TaskScores:
        """One model's scores on one task from a results folder."""
        board = read_leaderboard(folder)
        rows = board[(board["model"] == model) & (board["task"] == task)].to_dict("records")
        if not rows:
            raise MRBError(f"{Path(folder) / LEADERBOARD_FILE}: no result of model {model!r} on task {task}")
        per_query = read_per_query(folder, model, task) if rows[0]["status"] == Status.OK else None
        return cls.from_row(rows[0], per_query)


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _part_values(per_query: pd.DataFrame | None) -> dict[str, float]:
    if per_query is None or not (per_query["part"] != "").any():
        return {}
    return {str(part): float(values.mean()) for part, values in per_query.groupby("part", sort=False)["value"]}


def load_results(folder: str | Path) -> list[TaskScores]:
    """Every result in a results folder, with its per-query values.

    Args:
        folder: a folder written by `mrb run` or `mrb.evaluate(..., output_dir=folder)`.

    Returns:
        One `TaskScores` per (model, task) row of its leaderboard, in the leaderboard's order.
    """
    board = read_leaderboard(folder)
    return [
        TaskScores.from_row(row, read_per_query(folder, row["model"], row["task"]) if row["status"] == Status.OK else None)
        for row in board.to_dict("records")
    ]


def write_trec(path: Path, ranking: pd.DataFrame, tag: str) -> None:
    """`qid Q0 docid rank score tag` lines in MRB's order, the scores tie-free float32 (`tie_free_scores`)."""
    scores = tie_free_scores(ranking).astype(np.float32)  # written in their shortest float32 form
    lines = [
        f"{q} Q0 {d} {r} {s!s} {tag}\n" for q, d, r, s in zip(ranking["query_id"], ranking["doc_id"], ranking["rank"], scores)
    ]
    atomic_write_bytes(path, "".join(lines).encode())


def read_trec(results_dir: str | Path, model: str, task: str) -> pd.DataFrame:
    """The reranked run of one (model, task) as `write_trec` writes it: query_id, doc_id, rank, score."""
    path = result_path(Path(results_dir), model, task, ".trec")
    if not path.is_file():
        raise MRBError(f"{path} is missing: the reranked lists of {model!r} on {task} are needed")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        try:
            if len(fields) != 6 or fields[1] != "Q0":
                raise ValueError("not 'qid Q0 docid rank score tag'")
            rows.append((fields[0], fields[2], int(fields[3]), float(fields[4])))
        except ValueError as exc:
            raise MRBError(f"{path}, line {number}: {exc}") from None
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "rank", "score"])


# ── the results folder ───────────────────────────────────────────────────────────────────


def model_dirname(model: str) -> str:
    """The folder of a model's result files: its name as one safe path component (hub ids and paths included)."""
    return safe_filename(model)


def result_path(results_dir: Path, model: str, task: str, suffix: str) -> Path:
    """`<results>/<model folder>/<task><suffix>`, refused if a name from the data would leave the folder."""
    return contained(Path(results_dir), model_dirname(model), f"{safe_filename(task)}{suffix}")


def read_leaderboard(results_dir: str | Path) -> pd.DataFrame:
    """The leaderboard rows of a results folder, refused by name when MRB cannot read them."""
    path = Path(results_dir) / LEADERBOARD_FILE
    if not path.is_file():
        raise MRBError(f"no results in {results_dir}: {LEADERBOARD_FILE} is missing (run `mrb run` first)")
    frame = read_parquet_table(path, "the leaderboard rows").to_pandas()
    if "identity" not in frame.columns and "model" in frame.columns:
        raise MRBError(
            f"{path} was written by MRB 0.1, whose results carry no model identity and count judged queries without a "
            "relevant document differently: rerun the models into a new results folder"
        )
    missing = [c for c in LEADERBOARD_COLUMNS if c not in frame.columns]
    if missing:
        raise MRBError(f"{path}: not an MRB leaderboard (missing column(s) {', '.join(missing)})")
    newer = sorted(set(frame["schema_version"]) - {SCHEMA_VERSION})
    if newer:
        raise MRBError(f"{path}: results of schema version {newer[0]}; this MRB reads version {SCHEMA_VERSION} (upgrade MRB)")
    return frame


def read_per_query(results_dir: str | Path, model: str, task: str) -> pd.DataFrame:
    """The per-query Parquet of one (model, task), as `TaskScores.write` writes it."""
    path = result_path(Path(results_dir), model, task, ".parquet")
    return read_parquet_table(path, f"the per-query values of {model!r} on {task}").to_pandas()


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


def stored_identities(results_dir: Path) -> dict[str, ModelIdentity]:
    """The identity of every model with results in `results_dir` (none when it has no leaderboard)."""
    if not (results_dir / LEADERBOARD_FILE).is_file():
        return {}
    board = read_leaderboard(results_dir)
    return {model: ModelIdentity.from_json(text) for model, text in zip(board["model"], board["identity"])}


def check_model_folder(results_dir: Path, identity: ModelIdentity, *, replace: bool) -> bool:
    """Whether `identity` may write its results to `results_dir` only once another model of its name is removed.

    False: it may write (a new model, or the same model again). True: `replace` is set and a different model
    holds its name (`remove_model` must go first). Refused, with an `MRBError` naming what differs: a different
    model under the same name without `replace`, and any model whose results folder another model's name maps to.
    """
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


# ── several results folders, and the consistency guard ───────────────────────────────────


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
        raise MRBError(
            f"model {first['model']!r} has results for task {first['task']} in both {where}; report those folders separately"
        )
    return board


def _who_has(models: pd.Series, values: list[str]) -> str:
    """'a (m1, m2) vs b (m3)': each distinct value with the models that hold it."""
    groups = {v: [m for m, w in zip(models, values) if w == v] for v in dict.fromkeys(values)}
    return " vs ".join(f"{v} ({', '.join(held)})" for v, held in groups.items())


def mixed_results(board: pd.DataFrame) -> list[str]:
    """One line per task whose ok rows differ in pack hash or metric settings, naming what differs and for whom."""
    problems = []
    ok = board[board["status"] == Status.OK]
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
