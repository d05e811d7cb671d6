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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from mrb.errors import MRBError
from mrb.metrics import MEASURE_COLUMNS, NO_RELEVANT_RULES
from mrb.results import read_per_query
from mrb.stats import PERMUTATIONS, SEED, paired_randomisation
from mrb.tasks import Category, TaskType, load_yaml

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
    tasks: dict[str, int]
    models: list[ReportedModel]

    @model_validator(mode="after")
    def _first_stage_is_a_model(self) -> ReportedFile:
        if self.first_stage not in {m.model for m in self.models}:
            raise ValueError(f"first_stage {self.first_stage!r} is not one of its models")
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
        out.append(Reported(data.source, data.url, data.metric, data.first_stage, data.tasks, values))
    return out


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


@dataclass
class Summary:
    """The report's content: aggregated rows, per-task values and the notes printed under them."""

    metric: str
    columns: dict[str, int]  # mean column → number of the user's tasks it averages (0: reported only)
    table: pd.DataFrame  # index: row label; columns: type labels, categories, ALL, GAIN[, BORDA]
    kind: dict[str, str]  # row label → "first stage", "run" or "reported"
    matrix: pd.DataFrame  # first stage + models × tasks
    tasks: pd.DataFrame  # task, type, category in table order
    details: pd.DataFrame  # one row per ok (model, task): value, CI and the other measures
    notes: list[str] = field(default_factory=list)


def summarise(board: pd.DataFrame, reported: Sequence[Reported] = (), *, borda: bool = False) -> Summary:
    """Means per type, per category and ALL over `board`'s tasks; gain over the first stage;
    reported rows appended under their own task counts."""
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
    kind = {label: ("first stage" if label == FIRST_STAGE else "run") for label in table.index}
    notes = no_relevant_notes(board)
    for source in reported:
        rows = source.values.reindex(columns=shown)
        rows[GAIN] = (rows[ALL] - rows.at[source.first_stage, ALL]).round(6)  # the source's two decimals, ×100
        rows.index = [f"{m} (reported)" for m in rows.index]
        table = pd.concat([table, rows])
        kind.update(dict.fromkeys(rows.index, "reported"))
        counts = ", ".join(f"{c} {n}" for c, n in source.task_counts.items() if c in source.values.columns)
        notes.append(
            f"(reported): published {source.metric} from {source.source} ({source.url}); first stage {source.first_stage}. "
            f"Their columns average the paper's tasks ({counts}), not the tasks of your runs; "
            "a column the source does not give is empty."
        )
    if borda:
        table[BORDA] = borda_ranks(matrix).reindex(table.index)
    details = board[board["status"] == "ok"][["task", "model", "value", "ci_low", "ci_high", *MEASURE_COLUMNS]]
    order = {t: i for i, t in enumerate(tasks["task"])}
    details = details.sort_values("task", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    metric = ", ".join(dict.fromkeys(board["metric"])) or "nDCG@10"
    return Summary(metric, {c: len(groups[c]) for c in shown}, table, kind, matrix, tasks, details, notes)


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


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def _is_number(cell: str) -> bool:
    return cell.strip("*").lstrip("+-").replace(".", "", 1).isdigit()


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A pipe table with columns padded to equal width; text left-aligned, numbers right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    numeric = [i > 0 and all(r[i] == "" or _is_number(r[i]) for r in rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else (":" + "-" * (w + 1)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _bold_best(cells: list[str], values: list[float], *, lowest: bool = False) -> list[str]:
    """Bold every cell whose displayed value is the best of `values` (NaN ignored)."""
    shown = [round(v, 6) for v in values if not pd.isna(v)]
    if not shown:
        return cells
    best = min(shown) if lowest else max(shown)
    return [f"**{c}**" if not pd.isna(v) and round(v, 6) == best else c for c, v in zip(cells, values)]


def _summary_rows(summary: Summary) -> tuple[list[str], list[list[str]]]:
    table = summary.table
    header = ["model", *(f"{c} ({summary.columns[c]})" if summary.columns.get(c) else c for c in table.columns)]
    measured = [label for label in table.index if summary.kind[label] != "reported"]
    columns = []
    for name in table.columns:
        col = table[name]
        if name == BORDA:
            cells = ["" if pd.isna(v) else str(int(v)) for v in col]
        else:
            cells = [_cell(v, signed=name == GAIN) for v in col]
        best = _bold_best(cells[: len(measured)], [round(100 * v, 2) for v in col[measured]], lowest=name == BORDA)
        columns.append(best + cells[len(measured) :])
    rows = [[label, *cells] for label, cells in zip(table.index, zip(*columns))]
    return header, rows


def to_markdown(summary: Summary) -> str:
    """The summary table (paper layout, ×100), values per task, then CIs and the other measures."""
    header, rows = _summary_rows(summary)
    matrix = summary.matrix
    task_rows = []
    for task, label in zip(summary.tasks["task"], summary.tasks["type"]):
        values = [round(100 * v, 2) for v in matrix[task]]
        task_rows.append([task, label, *_bold_best([_cell(v) for v in matrix[task]], values)])
    detail_rows = [
        [
            row["task"],
            row["model"],
            _cell(row["value"]),
            f"{_cell(row['ci_low'])}–{_cell(row['ci_high'])}",
            *(_cell(row[m]) for m in MEASURE_COLUMNS),
        ]
        for _, row in summary.details.iterrows()
    ]
    notes = [
        "Bold: the best measured value per column (per task in the second table); reported rows are context, never bold. "
        "An empty cell: the task was not run, the model does not take its modalities, or the source gives no number; "
        "a type, category or ALL cell is empty unless the row has every task it averages.",
        *summary.notes,
    ]
    sections = [
        f"## {summary.metric} by type, category and ALL (mean over tasks, ×100)",
        markdown_table(header, rows),
        f"## {summary.metric} per task (×100)",
        markdown_table(["task", "type", *matrix.index], task_rows),
    ]
    if detail_rows:
        sections += [
            "## Per task: 95% bootstrap CI and the other measures (×100)",
            markdown_table(
                ["task", "model", summary.metric, "95% CI", *(MEASURE_HEADERS[m] for m in MEASURE_COLUMNS)], detail_rows
            ),
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
    table: pd.DataFrame  # task, type, queries, A, B, delta, p_value; the last row is ALL
    notes: list[str]


def compare_models(board: pd.DataFrame, a: str, b: str) -> Comparison:
    """Per-task and ALL differences B − A on per-query values (needs each row's `results_dir`).

    Either side may be `first stage`: its per-query values are read beside the other model's.
    """
    if a == b:
        raise MRBError(f"--compare needs two different models, got {a!r} twice")
    known = list(dict.fromkeys(board["model"]))
    for name in (a, b):
        if name not in known and name != FIRST_STAGE:
            raise MRBError(f"model {name!r} has no results here (models: {FIRST_STAGE!r}, {', '.join(map(repr, known))})")
    ok = board[board["status"] == "ok"].set_index(["model", "task"])
    holder = {a: b if a == FIRST_STAGE else a, b: a if b == FIRST_STAGE else b}  # whose per-query file holds the values

    def per_query_values(model: str, task: str) -> pd.DataFrame:
        frame = read_per_query(ok.at[(holder[model], task), "results_dir"], holder[model], task)
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
    notes = [f"Not compared (no result for one of the two models): {', '.join(skipped)}."] if skipped else []
    return Comparison(a, b, ", ".join(dict.fromkeys(board["metric"])), table, notes)


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
    rows = [
        [
            row["task"],
            row["type"],
            str(row["queries"]),
            _cell(row[a]),
            _cell(row[b]),
            _cell(row["delta"], signed=True),
            f"{row['p_value']:.4f}",
        ]
        for _, row in table.iterrows()
    ]
    return "\n\n".join(
        [
            f"## {b} vs {a}: {comparison.metric} (×100), paired randomisation test",
            markdown_table(["task", "type", "queries", a, b, f"Δ ({b} − {a})", "p"], rows),
            f"p: two-sided, {PERMUTATIONS} random sign flips of the per-query differences (seed {SEED}); "
            f"the {ALL} row flips within every task at once and tests the mean over tasks of the per-task differences.",
            *comparison.notes,
        ]
    )


# ── CSV, JSON, PNG ───────────────────────────────────────────────────────────────────────


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
    """Summary rows, per-task details (CI, other measures), column task counts and notes (fractions)."""
    payload = {
        "metric": summary.metric,
        "columns": summary.columns,
        "rows": [{k: _plain(v) for k, v in row.items()} for row in _wide(summary).to_dict("records")],
        "tasks": [{k: _plain(v) for k, v in row.items()} for row in summary.details.to_dict("records")],
        "notes": summary.notes,
    }
    return json.dumps(payload, indent=2, ensure_ascii=False)


def to_png(summary: Summary, path: Path) -> None:
    """Grouped bars: one group per type column the runs cover and ALL, one bar per measured row (×100)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MRBError("the PNG chart needs matplotlib: pip install 'mrb[plot]'") from exc
    columns = [c for c, n in summary.columns.items() if n and (c in TYPE_ORDER or c == ALL)]
    rows = [label for label in summary.table.index if summary.kind[label] != "reported"]
    width = 0.8 / len(rows)
    fig = Figure(figsize=(max(6.0, 1.1 * len(columns) + 2), 5.0))
    ax = fig.subplots()
    for i, label in enumerate(rows):
        heights = [100 * v for v in summary.table.loc[label, columns]]  # NaN draws no bar: empty, not 0
        ax.bar(np.arange(len(columns)) + (i + 0.5) * width - 0.4, heights, width, label=label)
    ax.set_xticks(np.arange(len(columns)), [f"{c} ({summary.columns[c]})" for c in columns])
    ax.set_ylabel(f"{summary.metric} (×100)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{summary.metric} per task type (mean over tasks)")
    ax.legend(fontsize="small", ncols=min(len(rows), 4), loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
