"""Leaderboard tables from results alone, with the paper's reported numbers beside them.

Columns as in the paper: one per task type, one per category and ALL, each the plain mean
over the tasks it covers (empty, never partial, when a model lacks any of them); the gain of
ALL over the first stage; optionally a Borda rank. Rendered as markdown, CSV, JSON or a PNG
chart. Conventions: docs/metrics.md.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from mrb.errors import MRBError
from mrb.metrics import MEASURE_COLUMNS, NO_RELEVANT_RULES
from mrb.results import read_per_query
from mrb.stats import PERMUTATIONS, SEED, paired_randomisation
from mrb.tasks import Category, TaskType, load_tasks, load_yaml

TYPE_ORDER = [t.label for t in TaskType]
CATEGORY_ORDER = [c.value for c in Category]
FIRST_STAGE = "first stage"
ALL = "ALL"
GAIN = "Δ first stage"
BORDA = "Borda rank"
MEASURE_HEADERS = {"RR@10": "MRR@10", "R@10": "R@10", "Judged@10": "Judged@10", "first_stage_R@100": "first-stage R@100"}


# ── the paper's numbers ──────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Reported:
    """Published numbers from one source: per-column means (fractions) per model."""

    source: str
    url: str
    metric: str
    first_stage: str
    suite: str  # the suite whose tasks the numbers average: shown by default beside results of that suite only
    task_counts: dict[str, int]
    values: pd.DataFrame  # index: model; columns: type labels, categories, ALL


def reported_dir() -> Path:
    """`leaderboards/reported/` of a source checkout, or its copy inside the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_bundled" / "reported", here.parent / "leaderboards" / "reported"):
        if candidate.is_dir():
            return candidate
    raise MRBError(
        f"MRB's reported numbers are missing (looked in {here / '_bundled' / 'reported'} and {here.parent / 'leaderboards' / 'reported'})"
    )


REPORTED_COLUMNS = (*TYPE_ORDER, *CATEGORY_ORDER, ALL)


class ReportedModel(BaseModel):
    """One model's published means, ×100, under the column names of `mrb report` (``T→T``, ``ALL``, …)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    model: str
    parameters: str = ""

    @model_validator(mode="after")
    def _columns_are_known_numbers(self) -> ReportedModel:
        for column, value in (self.model_extra or {}).items():
            if column not in REPORTED_COLUMNS:
                unknown = sorted(set(self.model_extra or {}) - set(REPORTED_COLUMNS))
                raise ValueError(f"model {self.model!r} has unknown column(s) {', '.join(unknown)}")
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 100:
                raise ValueError(f"column {column!r}: {value!r} is not a number from 0 to 100")
        return self

    def values(self) -> dict[str, float]:
        """Column → published value as a fraction."""
        return {c: round(v / 100, 6) for c, v in (self.model_extra or {}).items()}


class ReportedFile(BaseModel):
    """A file of published numbers (`leaderboards/reported/*.yaml`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    url: str
    metric: str
    first_stage: str
    suite: str
    tasks: dict[str, int]
    models: list[ReportedModel]

    @model_validator(mode="after")
    def _first_stage_is_a_model(self) -> ReportedFile:
        if self.first_stage not in {m.model for m in self.models}:
            raise ValueError(f"first_stage {self.first_stage!r} is not one of its models")
        uncounted = sorted({c for m in self.models for c in m.model_extra or {}} - set(self.tasks), key=REPORTED_COLUMNS.index)
        if uncounted:
            raise ValueError(f"tasks gives no task count for column(s) {', '.join(uncounted)}")
        return self


def _reported_problems(exc: ValidationError) -> str:
    """A reported-numbers file's problems in words: missing keys together, then each other problem."""
    errors = exc.errors()
    missing = [".".join(map(str, e["loc"])) for e in errors if e["type"] == "missing"]
    problems = [f"missing key(s) {', '.join(missing)}"] if missing else []
    for e in errors:
        if e["type"] == "value_error":
            problems.append(str(e["ctx"]["error"]))
        elif e["type"] != "missing":
            problems.append(f"{'.'.join(map(str, e['loc']))}: {e['msg']}")
    return "; ".join(problems)


def load_reported(folder: Path | None = None) -> list[Reported]:
    """Every `*.yaml` of reported numbers in `folder` (default: the bundled ones), values ×100 → fractions."""
    out = []
    for path in sorted((folder or reported_dir()).glob("*.yaml")):
        try:
            data = ReportedFile(**load_yaml(path))
        except ValidationError as exc:
            raise MRBError(f"{path}: {_reported_problems(exc)}") from None
        rows = {m.model: m.values() for m in data.models}
        values = pd.DataFrame.from_dict(rows, orient="index").reindex(
            columns=[c for c in REPORTED_COLUMNS if any(c in r for r in rows.values())]
        )
        out.append(Reported(data.source, data.url, data.metric, data.first_stage, data.suite, data.tasks, values))
    return out


def reported_for(board: pd.DataFrame, sources: Sequence[Reported], wanted: bool | None = None) -> list[Reported]:
    """The sources of reported numbers to show beside `board`: all (`wanted` True), none (False), or by default
    those whose suite holds every task of the results (a `mini` report shows none)."""
    if wanted is not None:
        return list(sources) if wanted else []
    tasks = set(board["task"])
    return [s for s in sources if tasks <= {t.name for t in load_tasks(s.suite)}]


# ── aggregation ──────────────────────────────────────────────────────────────────────────


def _ordered_tasks(board: pd.DataFrame) -> pd.DataFrame:
    tasks = board.drop_duplicates("task")[["task", "type", "category"]].copy()
    tasks["order"] = tasks["type"].map(TYPE_ORDER.index)
    return tasks.sort_values(["order", "task"]).reset_index(drop=True)


def value_matrix(board: pd.DataFrame) -> pd.DataFrame:
    """Rows = the first stage, then models (in order of appearance); columns = tasks; NaN = no value."""
    ok = board[board["status"] == "ok"]
    tasks = _ordered_tasks(board)["task"].tolist()
    matrix = ok.pivot_table(index="model", columns="task", values="value", aggfunc="first")
    models = list(dict.fromkeys(board["model"]))
    matrix = matrix.reindex(index=models, columns=tasks)
    first = ok.groupby("task")["first_stage_value"].first().reindex(tasks)
    return pd.concat([pd.DataFrame([first.to_numpy()], index=[FIRST_STAGE], columns=tasks), matrix])


def borda_ranks(matrix: pd.DataFrame) -> pd.Series:
    """Rank by Borda count: per task a row scores one point per row it beats and half per tie;
    rows without a value sit that task out. Rank 1 = most points; equal points share a rank."""
    points = pd.Series(0.0, index=matrix.index)
    for task in matrix.columns:
        present = matrix[task].dropna()
        points[present.index] += present.rank(method="average") - 1
    return points.rank(ascending=False, method="min")


UNSUPPORTED = "unsupported"  # why a cell is empty: the model does not take the modalities of (one of) its tasks
NOT_RUN = "not run"  # no result of the row for (one of) its tasks
NOT_PUBLISHED = "no number published"  # a reported row's source gives no number for the column
EMPTY_MARKS = {UNSUPPORTED: "✗", NOT_RUN: "○", NOT_PUBLISHED: "–"}
ADAPTED_MARK = "†"  # a value scored through a declared modality fallback
NO_SIGNAL_MARK = "≡"  # a value equal to the first stage's: the model gave every candidate one score
BOLD_NOTE = "Bold: the best measured value per column (per task in the second table); reported rows are context, never bold."


@dataclass
class Summary:
    """The report's content: aggregated rows, per-task values, why empty cells are empty, and the notes."""

    metric: str
    columns: dict[str, int]  # mean column → number of the user's tasks it averages (0: reported only)
    table: pd.DataFrame  # index: row label; columns: type labels, categories, ALL, GAIN[, BORDA]
    kind: dict[str, str]  # row label → "first stage", "run" or "reported"
    matrix: pd.DataFrame  # first stage + models × tasks
    tasks: pd.DataFrame  # task, type, category in table order
    details: pd.DataFrame  # one row per ok (model, task): value, CI, the other measures, adapted, no_signal
    empty: pd.DataFrame = field(default_factory=pd.DataFrame)  # like table: "" or why the cell is empty
    empty_tasks: pd.DataFrame = field(default_factory=pd.DataFrame)  # like matrix: "" or why the cell is empty
    reported_columns: dict[str, int] = field(default_factory=dict)  # column → tasks the reported rows average
    adapted: dict[str, dict[str, str]] = field(default_factory=dict)  # model → task → the fallback that fed it
    no_signal: dict[str, list[str]] = field(default_factory=dict)  # model → tasks where it gave one score to all
    notes: list[str] = field(default_factory=list)


def _flags(board: pd.DataFrame) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """Per model, the tasks scored through a fallback (with it) and the tasks without signal."""
    ok = board[board["status"] == "ok"]
    adapted: dict[str, dict[str, str]] = {}
    no_signal: dict[str, list[str]] = {}
    for model, task, fallback, flat in zip(ok["model"], ok["task"], ok["adapted"], ok["no_signal"]):
        if isinstance(fallback, str) and fallback:
            adapted.setdefault(model, {})[task] = fallback
        if flat is True or (flat is not None and not pd.isna(flat) and bool(flat)):
            no_signal.setdefault(model, []).append(task)
    return adapted, no_signal


def _empty_tasks(board: pd.DataFrame, matrix: pd.DataFrame) -> pd.DataFrame:
    """Why each empty cell of `matrix` is empty: the model does not take the task, or there is no result."""
    unsupported = set(zip(*board.loc[board["status"] == UNSUPPORTED, ["model", "task"]].to_numpy().T))
    reasons = pd.DataFrame("", index=matrix.index, columns=matrix.columns)
    for label in matrix.index:
        for task in matrix.columns:
            if pd.isna(matrix.at[label, task]):
                reasons.at[label, task] = UNSUPPORTED if (label, task) in unsupported else NOT_RUN
    return reasons


def summarise(board: pd.DataFrame, reported: Sequence[Reported] = (), *, borda: bool = False) -> Summary:
    """Means per type, per category and ALL over `board`'s tasks; gain over the first stage;
    reported rows appended under their own task counts; why each empty cell is empty."""
    matrix = value_matrix(board)
    tasks = _ordered_tasks(board)
    groups: dict[str, list[str]] = {}
    for label in TYPE_ORDER:
        groups[label] = tasks.loc[tasks["type"] == label, "task"].tolist()
    for category in CATEGORY_ORDER:
        groups[category] = tasks.loc[tasks["category"] == category, "task"].tolist()
    groups[ALL] = tasks["task"].tolist()
    given = {c for r in reported for c in r.values.columns}
    shown = [c for c in groups if groups[c] or c in given]
    table = pd.DataFrame(
        {c: matrix[groups[c]].mean(axis=1, skipna=False) if groups[c] else np.nan for c in shown}, index=matrix.index
    )
    table[GAIN] = table[ALL] - table.at[FIRST_STAGE, ALL]
    empty_tasks = _empty_tasks(board, matrix)
    empty = pd.DataFrame("", index=table.index, columns=table.columns)
    for column in shown:
        for label in table.index:
            if pd.isna(table.at[label, column]):
                why = set(empty_tasks.loc[label, groups[column]])
                empty.at[label, column] = UNSUPPORTED if UNSUPPORTED in why else NOT_RUN
    empty[GAIN] = [empty.at[label, ALL] or (NOT_RUN if pd.isna(g) else "") for label, g in table[GAIN].items()]
    kind = {label: ("first stage" if label == FIRST_STAGE else "run") for label in table.index}
    notes = no_relevant_notes(board)
    reported_columns: dict[str, int] = {}
    for source in reported:
        rows = source.values.reindex(columns=shown)
        rows[GAIN] = (rows[ALL] - rows.at[source.first_stage, ALL]).round(6)  # the source's two decimals, ×100
        rows.index = [f"{m} (reported)" for m in rows.index]
        table = pd.concat([table, rows])
        empty = pd.concat([empty, rows.isna().map(lambda missing: NOT_PUBLISHED if missing else "")])
        kind.update(dict.fromkeys(rows.index, "reported"))
        for column in source.values.columns:  # the columns it gives numbers for
            reported_columns.setdefault(column, source.task_counts[column])
        counts = ", ".join(f"{c} {n}" for c, n in source.task_counts.items() if c in source.values.columns)
        notes.append(
            f"(reported): published {source.metric} from {source.source} ({source.url}); first stage {source.first_stage}. "
            f"Their columns average the {source.suite} suite's tasks ({counts}), not the tasks of your runs "
            "(a header gives both counts when they differ)."
        )
    if borda:
        table[BORDA] = borda_ranks(matrix).reindex(table.index)
        empty[BORDA] = ""
    order = {t: i for i, t in enumerate(tasks["task"])}
    adapted, no_signal = _flags(board.sort_values("task", key=lambda s: s.map(order), kind="stable"))
    ok = board[board["status"] == "ok"]
    details = ok[["task", "model", "value", "ci_low", "ci_high", *MEASURE_COLUMNS]].assign(
        adapted=[a if isinstance(a, str) else "" for a in ok["adapted"]],
        no_signal=[t in no_signal.get(m, []) for m, t in zip(ok["model"], ok["task"])],
    )
    details = details.sort_values("task", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    metric = ", ".join(dict.fromkeys(board["metric"])) or "nDCG@10"
    return Summary(
        metric,
        {c: len(groups[c]) for c in shown},
        table,
        kind,
        matrix,
        tasks,
        details,
        empty,
        empty_tasks,
        {c: n for c, n in reported_columns.items() if c in shown},
        adapted,
        no_signal,
        notes,
    )


def no_relevant_notes(board: pd.DataFrame) -> list[str]:
    """How judged queries without a relevant document were counted, per rule, naming the tasks that had any."""
    ok = board[board["status"] == "ok"].drop_duplicates("task")
    by_rule: dict[str, list[str]] = {}
    for task, settings, count in zip(ok["task"], ok["metric_settings"], ok["n_no_relevant"]):
        rule = json.loads(settings).get("no_relevant", "drop")  # MRB 0.1 dropped them
        if count or rule == "drop":
            by_rule.setdefault(rule, []).append(f"{task} ({count} quer{'y' if count == 1 else 'ies'})")
    return [
        f"Judged queries without a relevant document: {NO_RELEVANT_RULES[rule]} in {', '.join(tasks)}."
        for rule, tasks in sorted(by_rule.items(), key=lambda item: item[0] != "zero")
    ]


# ── markdown ─────────────────────────────────────────────────────────────────────────────


def cell(value: float | None, signed: bool = False, why: str = "") -> str:
    """A value ×100 with two decimals; an empty one as the mark of `why` it is empty."""
    if value is None or pd.isna(value):
        return EMPTY_MARKS.get(why, "")
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


@dataclass(frozen=True)
class Cell:
    """One cell of a report table, for every renderer: its text, the number it sorts by, bold (the best
    measured value), why it is empty, and a link where the renderer has pages (the explorer)."""

    text: str
    value: float | None = None
    strong: bool = False
    why: str = ""
    href: str | None = None

    def markdown(self) -> str:
        return f"**{self.text}**" if self.strong else self.text


def value_cell(value: Any, why: str = "", *, signed: bool = False, strong: bool = False, marks: str = "") -> Cell:
    """A value ×100 (`cell`) with its `marks`, or the mark of why it is empty."""
    if value is None or pd.isna(value):
        return Cell(EMPTY_MARKS.get(why, ""), why=why)
    return Cell(cell(value, signed) + marks, float(value), strong)


def _markdown(table: tuple[list[str], list[list[Cell]]]) -> tuple[list[str], list[list[str]]]:
    header, rows = table
    return header, [[c.markdown() for c in row] for row in rows]


def _is_number(cell: str) -> bool:
    core = cell.strip("*").rstrip(ADAPTED_MARK + NO_SIGNAL_MARK)
    return core in EMPTY_MARKS.values() or core.lstrip("+-").replace(".", "", 1).isdigit()


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A pipe table with columns padded to equal width; text left-aligned, numbers right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    numeric = [i > 0 and all(r[i] == "" or _is_number(r[i]) for r in rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else (":" + "-" * (w + 1)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def best_of(values: Sequence[float], *, lowest: bool = False) -> list[bool]:
    """Which of `values` (as displayed) are the best: every one equal to the highest (or lowest); NaN never."""
    shown = [round(v, 6) for v in values if not pd.isna(v)]
    best = (min(shown) if lowest else max(shown)) if shown else None
    return [not pd.isna(v) and round(v, 6) == best for v in values]


def column_header(summary: Summary, column: str) -> str:
    """A mean column's name with the number of tasks each kind of row averages (`T→T (2; reported 14)`)."""
    mine, theirs = summary.columns.get(column), summary.reported_columns.get(column)
    if mine is None:  # Δ first stage, Borda rank
        return column
    if theirs is None or theirs == mine:
        return f"{column} ({mine})" if mine else column
    return f"{column} ({mine}; reported {theirs})" if mine else f"{column} (reported {theirs})"


def row_label(summary: Summary, label: str) -> str:
    """A row's name with the marks of its flagged results: † adapted, ≡ no signal on some task."""
    marks = (ADAPTED_MARK if label in summary.adapted else "") + (NO_SIGNAL_MARK if label in summary.no_signal else "")
    return f"{label} {marks}" if marks else label


def task_marks(summary: Summary, model: str, task: str) -> str:
    """The marks of one (model, task) value: † scored through a fallback, ≡ equal to the first stage's."""
    return (ADAPTED_MARK if task in summary.adapted.get(model, {}) else "") + (
        NO_SIGNAL_MARK if task in summary.no_signal.get(model, []) else ""
    )


def summary_rows(summary: Summary) -> tuple[list[str], list[list[Cell]]]:
    """The summary table: a header and per row its label and each column's cell (the best measured bold)."""
    table = summary.table
    header = ["model", *(column_header(summary, c) for c in table.columns)]
    measured = [label for label in table.index if summary.kind[label] != "reported"]
    columns = []
    for name in table.columns:
        col = table[name]
        best = best_of([round(100 * v, 2) for v in col[measured]], lowest=name == BORDA) + [False] * (len(col) - len(measured))
        if name == BORDA:
            cells = [Cell("") if pd.isna(v) else Cell(str(int(v)), float(v), top) for v, top in zip(col, best)]
        else:
            cells = [value_cell(v, why, signed=name == GAIN, strong=top) for v, top, why in zip(col, best, summary.empty[name])]
        columns.append(cells)
    rows = [[Cell(row_label(summary, label)), *cells] for label, cells in zip(table.index, zip(*columns))]
    return header, rows


def task_rows(summary: Summary) -> tuple[list[str], list[list[Cell]]]:
    """Per task: its name, type and each row's value with its marks, the best bold."""
    matrix, rows = summary.matrix, []
    for task, label in zip(summary.tasks["task"], summary.tasks["type"]):
        best = best_of([round(100 * v, 2) for v in matrix[task]])
        cells = [
            value_cell(v, why, strong=top, marks=task_marks(summary, model, task))
            for model, v, why, top in zip(matrix.index, matrix[task], summary.empty_tasks[task], best)
        ]
        rows.append([Cell(task), Cell(label), *cells])
    return ["task", "type", *(row_label(summary, m) for m in matrix.index)], rows


def detail_rows(summary: Summary) -> tuple[list[str], list[list[Cell]]]:
    """Per (model, task) result: its value with its marks, its 95% interval and the other measures."""
    rows = [
        [
            Cell(row["task"]),
            Cell(row["model"]),
            value_cell(row["value"], marks=task_marks(summary, row["model"], row["task"])),
            Cell(f"{cell(row['ci_low'])}–{cell(row['ci_high'])}"),
            *(value_cell(row[m]) for m in MEASURE_COLUMNS),
        ]
        for _, row in summary.details.iterrows()
    ]
    return ["task", "model", summary.metric, "95% CI", *(MEASURE_HEADERS[m] for m in MEASURE_COLUMNS)], rows


def flag_notes(summary: Summary) -> list[str]:
    """The legend of the empty-cell marks, and the footnotes of adapted and no-signal results."""
    notes = [
        f"Empty cells: {EMPTY_MARKS[UNSUPPORTED]} unsupported (the model does not take the modalities of the task, or of one "
        f"of the tasks a mean covers) · {EMPTY_MARKS[NOT_RUN]} not run (no result) · {EMPTY_MARKS[NOT_PUBLISHED]} no number "
        "published (the source gives none). A type, category or ALL cell is empty unless the row has every task it averages."
    ]
    if summary.adapted:
        models = "; ".join(
            f"{model} ({'; '.join(f'{f} on ' + ', '.join(t for t in tasks if tasks[t] == f) for f in dict.fromkeys(tasks.values()))})"
            for model, tasks in summary.adapted.items()
        )
        notes.append(f"{ADAPTED_MARK} adapted: scored through a declared modality fallback, not the model's own sides: {models}.")
    if summary.no_signal:
        models = "; ".join(f"{model} on {', '.join(tasks)}" for model, tasks in summary.no_signal.items())
        notes.append(
            f"{NO_SIGNAL_MARK} no signal: equals the first stage (the model gave every candidate of every query one score, "
            f"so its values are the first stage's): {models}."
        )
    return notes


def to_markdown(summary: Summary) -> str:
    """The summary table (paper layout, ×100), values per task, then CIs and the other measures."""
    notes = [
        BOLD_NOTE,
        *flag_notes(summary),
        *summary.notes,
    ]
    sections = [
        f"## {summary.metric} by type, category and ALL (mean over tasks, ×100)",
        markdown_table(*_markdown(summary_rows(summary))),
        f"## {summary.metric} per task (×100)",
        markdown_table(*_markdown(task_rows(summary))),
    ]
    if len(summary.details):
        sections += [
            "## Per task: 95% bootstrap CI and the other measures (×100)",
            markdown_table(*_markdown(detail_rows(summary))),
        ]
    return "\n\n".join([*sections, *notes])


def render_markdown(board: pd.DataFrame) -> str:
    """The markdown report of a leaderboard alone (what `mrb run` prints)."""
    return to_markdown(summarise(board))


# ── paired comparison ────────────────────────────────────────────────────────────────────


@dataclass
class Comparison:
    """Model B against model A on their common tasks, with paired randomisation p-values."""

    a: str
    b: str
    metric: str
    table: pd.DataFrame  # task, type, queries, A, B, delta, p_value; the last row is ALL (when asked)
    notes: list[str]


def compare_models(board: pd.DataFrame, a: str, b: str, *, overall: bool = True) -> Comparison:
    """Per-task and (with `overall`) ALL differences B − A on per-query values (needs each row's `results_dir`).

    Either side may be `first stage`: its per-query values are read beside the other model's (one read for both).
    """
    if a == b:
        raise MRBError(f"--compare needs two different models, got {a!r} twice")
    known = list(dict.fromkeys(board["model"]))
    for name in (a, b):
        if name not in known and name != FIRST_STAGE:
            raise MRBError(f"model {name!r} has no results here (models: {FIRST_STAGE!r}, {', '.join(map(repr, known))})")
    ok = board[board["status"] == "ok"].set_index(["model", "task"])
    holder = {a: b if a == FIRST_STAGE else a, b: a if b == FIRST_STAGE else b}  # whose per-query file holds the values

    @cache
    def per_query_file(model: str, task: str) -> pd.DataFrame:
        return read_per_query(ok.at[(model, task), "results_dir"], model, task)

    def per_query_values(model: str, task: str) -> pd.DataFrame:
        frame = per_query_file(holder[model], task)
        column = "first_stage_value" if model == FIRST_STAGE else "value"
        return frame[["query_id", "part", column]].rename(columns={column: "value"})

    def task_value(model: str, task: str) -> float:
        """The stored task value (the first stage's beside the other model's result)."""
        return float(ok.at[(holder[model], task), "first_stage_value" if model == FIRST_STAGE else "value"])

    tasks = _ordered_tasks(board)
    rows, differences, skipped = [], [], []
    for task, label in zip(tasks["task"], tasks["type"]):
        if (holder[a], task) not in ok.index or (holder[b], task) not in ok.index:
            skipped.append(task)
            continue
        values = [per_query_values(m, task) for m in (a, b)]
        merged = values[0].merge(values[1], on=["query_id", "part"], suffixes=("_a", "_b"))
        if not len(merged) == len(values[0]) == len(values[1]):
            raise MRBError(f"{task}: {a!r} and {b!r} were scored on different queries")
        merged["diff"] = merged["value_b"] - merged["value_a"]
        strata = [group["diff"].to_numpy() for _, group in merged.groupby("part", sort=False)]
        differences.append(strata)
        value_a, value_b = task_value(a, task), task_value(b, task)
        rows.append([task, label, len(merged), value_a, value_b, value_b - value_a, paired_randomisation([strata])])
    if not rows:
        raise MRBError(f"{a!r} and {b!r} have no task with results for both")
    table = pd.DataFrame(rows, columns=["task", "type", "queries", a, b, "delta", "p_value"])
    notes = [f"Not compared (no result for one of the two models): {', '.join(skipped)}."] if skipped else []
    if not overall:
        return Comparison(a, b, ", ".join(dict.fromkeys(board["metric"])), table, notes)
    means = table[[a, b, "delta"]].mean()
    all_row = [
        f"{ALL} ({len(rows)})",
        "",
        int(table["queries"].sum()),
        means[a],
        means[b],
        means["delta"],
        paired_randomisation(differences),
    ]
    table.loc[len(table)] = all_row
    return Comparison(a, b, ", ".join(dict.fromkeys(board["metric"])), table, notes)


def comparison_rows(comparison: Comparison) -> tuple[list[str], list[list[Cell]]]:
    """Per task (then ALL): the queries, both values, their difference and its p-value."""
    a, b = comparison.a, comparison.b
    rows = [
        [
            Cell(row["task"]),
            Cell(row["type"]),
            Cell(str(row["queries"]), float(row["queries"])),
            value_cell(row[a]),
            value_cell(row[b]),
            value_cell(row["delta"], signed=True),
            Cell(f"{row['p_value']:.4f}", float(row["p_value"])),
        ]
        for _, row in comparison.table.iterrows()
    ]
    return ["task", "type", "queries", a, b, f"Δ ({b} − {a})", "p"], rows


def render_comparison(comparison: Comparison, fmt: str) -> str:
    """The comparison as markdown (×100), CSV or JSON (fractions)."""
    a, b, table = comparison.a, comparison.b, comparison.table
    if fmt == "csv":
        buffer = io.StringIO()
        table.to_csv(buffer, index=False, lineterminator="\n")
        return buffer.getvalue()
    if fmt == "json":
        return json.dumps(
            {"a": a, "b": b, "metric": comparison.metric, "rows": table.to_dict("records"), "notes": comparison.notes},
            indent=2,
            ensure_ascii=False,
        )
    return "\n\n".join(
        [
            f"## {b} vs {a}: {comparison.metric} (×100), paired randomisation test",
            markdown_table(*_markdown(comparison_rows(comparison))),
            f"p: two-sided, {PERMUTATIONS} random sign flips of the per-query differences (seed {SEED}); "
            f"the {ALL} row flips within every task at once and tests the mean over tasks of the per-task differences.",
            *comparison.notes,
        ]
    )


# ── CSV, JSON ───────────────────────────────────────────────────────────────────────


def _wide(summary: Summary) -> pd.DataFrame:
    """One row per summary row: kind, every summary column, then every task (fractions)."""
    wide = summary.table.join(summary.matrix, how="left")
    wide.insert(0, "kind", [summary.kind[label] for label in wide.index])
    return wide.rename_axis("model").reset_index()


def to_csv(summary: Summary) -> str:
    """The summary and per-task values as one wide CSV (fractions, full precision)."""
    buffer = io.StringIO()
    _wide(summary).to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


def _plain(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def to_json(summary: Summary) -> str:
    """Summary rows, per-task details (CI, other measures, flags), column task counts, why each empty cell
    is empty, and notes (fractions)."""
    tasks = summary.empty_tasks.reindex(summary.table.index, fill_value=NOT_PUBLISHED)  # reported rows give no task
    empty = pd.concat([summary.empty, tasks], axis=1)
    payload = {
        "metric": summary.metric,
        "columns": summary.columns,
        "reported_columns": summary.reported_columns,
        "rows": [{k: _plain(v) for k, v in row.items()} for row in _wide(summary).to_dict("records")],
        "empty": {label: {c: why for c, why in row.items() if why} for label, row in empty.iterrows()},
        "tasks": [{k: _plain(v) for k, v in row.items()} for row in summary.details.to_dict("records")],
        "notes": [*flag_notes(summary), *summary.notes],
    }
    return json.dumps(payload, indent=2, ensure_ascii=False)


# ── charts ───────────────────────────────────────────────────────────────────────────────

CHART_FORMATS = ("png", "pdf", "svg")
CHART_DPI = 300  # print resolution of the PNG (PDF and SVG are vector)


def chart_format(path: Path) -> str:
    """The file format of a chart, from its extension."""
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in CHART_FORMATS:
        raise MRBError(f"--output {path}: a chart is written as PNG, PDF or SVG, chosen by the extension (.png, .pdf or .svg)")
    return fmt


def _figure(**options: Any) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MRBError("the chart needs matplotlib: pip install 'mrb[plot]'") from exc
    return Figure(layout="constrained", **options)


def save_chart(fig: Any, target: Path | io.IOBase, fmt: str) -> None:
    """Write a figure as PNG (at `CHART_DPI`), PDF or SVG (text kept as text), without a timestamp, so the same
    results give the same file."""
    from matplotlib import rc_context

    metadata = {"png": {"Software": None}, "pdf": {"CreationDate": None}, "svg": {"Date": None}}[fmt]
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "mrb"}):
        fig.savefig(target, format=fmt, dpi=CHART_DPI, metadata=metadata)


def chart_svg(fig: Any) -> str:
    """A figure as an inline ``<svg>`` element (no XML prolog or doctype)."""
    buffer = io.StringIO()
    save_chart(fig, buffer, "svg")
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def chart_columns(summary: Summary) -> list[str]:
    """The columns a chart draws: each type the runs cover, and ALL."""
    return [c for c, n in summary.columns.items() if n and (c in TYPE_ORDER or c == ALL)]


def _column_tasks(summary: Summary, column: str) -> list[str]:
    tasks = summary.tasks
    return tasks["task"].tolist() if column == ALL else tasks.loc[tasks["type"] == column, "task"].tolist()


def column_intervals(board: pd.DataFrame, summary: Summary, columns: Sequence[str]) -> dict[tuple[str, str], tuple[float, float]]:
    """The 95% interval of each measured row's value in each of `columns` (a type or ALL), keyed (row, column):
    a one-task column's is the task's stored interval, a mean's comes from its tasks' per-query values
    (`mrb.evaluation.mean_interval`); the first stage's per-query values are read beside the first model's."""
    from mrb.evaluation import mean_interval

    ok = board[board["status"] == "ok"]
    first_holder = ok.drop_duplicates("task").set_index("task")["model"]  # whose row gives the first-stage value
    rows = ok.set_index(["model", "task"])

    @cache  # a task's file serves its type column and ALL
    def strata(label: str, task: str) -> list[np.ndarray]:
        holder = first_holder[task] if label == FIRST_STAGE else label
        frame = read_per_query(rows.at[(holder, task), "results_dir"], holder, task)
        column = "first_stage_value" if label == FIRST_STAGE else "value"
        return [values.to_numpy() for _, values in frame.groupby("part", sort=False)[column]]

    out = {}
    for label in (lbl for lbl in summary.table.index if summary.kind[lbl] != "reported"):
        for column in columns:
            tasks = _column_tasks(summary, column)
            if pd.isna(summary.table.at[label, column]):
                continue
            if len(tasks) == 1 and label != FIRST_STAGE:
                out[label, column] = (float(rows.at[(label, tasks[0]), "ci_low"]), float(rows.at[(label, tasks[0]), "ci_high"]))
            else:
                out[label, column] = mean_interval([strata(label, t) for t in tasks])
    return out


def draw_chart(summary: Summary, intervals: dict[tuple[str, str], tuple[float, float]]) -> Any:
    """Grouped bars (×100): one group per type column the runs cover and ALL, one bar per measured row, with its
    95% CI whisker and value; a hatched bar where the model does not take the column's modalities."""
    from matplotlib.patches import Patch

    columns = chart_columns(summary)
    rows = [label for label in summary.table.index if summary.kind[label] != "reported"]
    width = 0.8 / len(rows)
    fig = _figure(figsize=(max(6.0, 0.35 * len(columns) * len(rows) + 2.5), 5.0))
    ax = fig.subplots()
    for i, label in enumerate(rows):
        color = f"C{i}"
        for j, column in enumerate(columns):
            x = j + (i + 0.5) * width - 0.4
            value = summary.table.at[label, column]
            if pd.isna(value):
                if summary.empty.at[label, column] == UNSUPPORTED:
                    ax.bar(x, 100, width, fill=False, hatch="///", edgecolor=color, linewidth=0, alpha=0.4)
                continue
            ax.bar(x, 100 * value, width, color=color)
            top = 100 * value
            if (label, column) in intervals:
                low, high = (100 * v for v in intervals[label, column])
                ax.errorbar(x, top, yerr=[[top - low], [high - top]], fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
                top = max(top, high)
            ax.text(x, top + 1, f"{100 * value:.2f}", ha="center", va="bottom", rotation=90, fontsize=6)
    ax.set_xticks(np.arange(len(columns)), [column_header(summary, c) for c in columns])
    ax.set_ylabel(f"{summary.metric} (×100)")
    ax.set_ylim(0, 115)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(f"{summary.metric} per task type (mean over tasks; whiskers: 95% bootstrap CI)")
    handles = [Patch(color=f"C{i}", label=row_label(summary, label)) for i, label in enumerate(rows)]
    if (summary.empty.loc[rows, columns] == UNSUPPORTED).any().any():
        handles.append(Patch(fill=False, hatch="///", edgecolor="grey", label="unsupported"))
    ax.legend(handles=handles, fontsize="small", ncols=min(len(handles), 4), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    return fig


def to_chart(summary: Summary, board: pd.DataFrame, path: Path) -> None:
    """The chart of `summary` written to `path` as PNG, PDF or SVG by its extension (`board` gives the per-query
    values behind the whiskers)."""
    fmt = chart_format(path)
    fig = draw_chart(summary, column_intervals(board, summary, chart_columns(summary)))
    save_chart(fig, path, fmt)


# ── the depth ablation ───────────────────────────────────────────────────────────────────


def depth_summaries(board: pd.DataFrame) -> dict[int, Summary]:
    """One summary per reranking depth of a depth board (`mrb.depths.depth_board`), shallowest first."""
    return {int(depth): summarise(rows) for depth, rows in board.groupby("depth", sort=True)}


def depth_table(summaries: dict[int, Summary]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ablation's rows (the first stage once, then each model at each depth) and why empty cells are empty."""
    first = next(iter(summaries.values()))
    columns = [c for c in first.table.columns if c != BORDA]
    labels = [FIRST_STAGE] + [label for label in first.table.index if label != FIRST_STAGE]
    rows = [(FIRST_STAGE, "any", first.table.loc[FIRST_STAGE, columns], first.empty.loc[FIRST_STAGE, columns])]
    for label in labels[1:]:
        for depth, summary in summaries.items():
            rows.append((label, str(depth), summary.table.loc[label, columns], summary.empty.loc[label, columns]))
    index = pd.MultiIndex.from_tuples([(label, depth) for label, depth, _, _ in rows], names=["model", "depth"])
    values = pd.DataFrame([v.to_numpy() for _, _, v, _ in rows], index=index, columns=columns)
    empty = pd.DataFrame([e.to_numpy() for _, _, _, e in rows], index=index, columns=columns)
    return values, empty


def depth_rows(summaries: dict[int, Summary]) -> tuple[list[str], list[list[Cell]]]:
    """Per (row, depth) of the ablation: each column's value, or why it is empty."""
    values, empty = depth_table(summaries)
    first = next(iter(summaries.values()))
    rows = [
        [
            Cell(row_label(first, label)),
            Cell(depth, float(depth) if depth.isdigit() else None),
            *(value_cell(values.at[(label, depth), c], empty.at[(label, depth), c], signed=c == GAIN) for c in values.columns),
        ]
        for label, depth in values.index
    ]
    return ["model", "depth", *(column_header(first, c) for c in values.columns)], rows


def depth_markdown(summaries: dict[int, Summary]) -> str:
    """The ablation table (×100) with its notes."""
    first = next(iter(summaries.values()))
    return "\n\n".join(
        [
            f"## {first.metric} by reranking depth: the top d of the first stage reranked, the rest in its order (×100)",
            markdown_table(*_markdown(depth_rows(summaries))),
            f"Every depth comes from the cached scores of one run at the deepest ({max(summaries)}): no pair was scored again.",
            *flag_notes(first),
        ]
    )


def depth_frame(summaries: dict[int, Summary]) -> pd.DataFrame:
    """The ablation as one row per (model, depth): kind and every column (fractions), for CSV and JSON."""
    values, _ = depth_table(summaries)
    kinds = next(iter(summaries.values())).kind
    frame = values.reset_index()
    frame.insert(2, "kind", [kinds[label] for label in frame["model"]])
    return frame


def depth_csv(summaries: dict[int, Summary]) -> str:
    buffer = io.StringIO()
    depth_frame(summaries).to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


def depth_json(summaries: dict[int, Summary]) -> str:
    first = next(iter(summaries.values()))
    _, empty = depth_table(summaries)
    payload = {
        "metric": first.metric,
        "depths": list(summaries),
        "columns": {c: n for c, n in first.columns.items()},
        "rows": [{k: _plain(v) for k, v in row.items()} for row in depth_frame(summaries).to_dict("records")],
        "empty": {f"{label} @ {depth}": {c: why for c, why in row.items() if why} for (label, depth), row in empty.iterrows()},
    }
    return json.dumps(payload, indent=2, ensure_ascii=False)


def draw_depth_chart(summaries: dict[int, Summary]) -> Any:
    """One panel per type column the runs cover and ALL: each model's value (×100) against the depth, the
    first stage as a dashed line (it does not depend on the depth)."""
    first = next(iter(summaries.values()))
    columns = chart_columns(first)
    depths = list(summaries)
    panels = min(len(columns), 3)
    rows_n = -(-len(columns) // panels)
    fig = _figure(figsize=(4.0 * panels, 3.2 * rows_n + 0.6))
    axes = np.atleast_1d(fig.subplots(rows_n, panels, squeeze=False)).ravel()
    models = [label for label in first.table.index if label != FIRST_STAGE]
    for ax, column in zip(axes, columns):
        ax.axhline(100 * first.table.at[FIRST_STAGE, column], color="C0", linestyle="--", linewidth=1, label=FIRST_STAGE)
        for i, label in enumerate(models, start=1):  # the colours of the bar chart, where the first stage is C0
            values = [100 * summaries[d].table.at[label, column] for d in depths]
            if not all(pd.isna(v) for v in values):
                ax.plot(depths, values, marker="o", color=f"C{i}", label=row_label(first, label))
        ax.set_title(column_header(first, column), fontsize="medium")
        ax.set_xticks(depths)
        ax.set_xlabel("reranking depth")
        ax.set_ylabel(f"{first.metric} (×100)")
    for ax in axes[len(columns) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1 : len(columns)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize="small")
    fig.suptitle(f"{first.metric} by reranking depth (from one pass)")
    return fig


def draw_gain_histograms(metric: str, panels: Sequence[tuple[str, np.ndarray, str]]) -> Any:
    """One histogram per comparison (title, per-query differences, colour) of its differences ×100, in bins of 5
    centred on multiples of 5 (a difference of 0 sits in the bin around 0)."""
    columns = min(len(panels), 3)
    rows_n = -(-len(panels) // columns)
    fig = _figure(figsize=(3.6 * columns, 2.6 * rows_n))
    axes = np.atleast_1d(fig.subplots(rows_n, columns, squeeze=False)).ravel()
    for ax, (title, deltas, colour) in zip(axes, panels):
        ax.hist(100 * np.asarray(deltas, dtype=np.float64), bins=np.linspace(-102.5, 102.5, 42), color=colour)
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel(f"Δ {metric} per query (×100)")
        ax.set_ylabel("queries")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    return fig
