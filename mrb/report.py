"""Markdown tables from a leaderboard: per task, and per type with ALL (the mean over tasks)."""

from __future__ import annotations

import pandas as pd

from mrb.tasks import TaskType

TYPE_ORDER = [t.label for t in TaskType]
FIRST_STAGE = "first stage"


def _cell(value: float | None) -> str:
    return "" if value is None or pd.isna(value) else f"{100 * value:.2f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A pipe table with columns padded to equal width; text left-aligned, numbers right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    numeric = [i > 0 and all(r[i] == "" or r[i].replace(".", "", 1).lstrip("-").isdigit() for r in rows) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else (":" + "-" * (w + 1)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _ordered_tasks(board: pd.DataFrame) -> pd.DataFrame:
    tasks = board.drop_duplicates("task")[["task", "type"]].copy()
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


def type_means(board: pd.DataFrame) -> pd.DataFrame:
    """Mean per type and ALL over the tasks in `board`; a model missing any task of a column gets NaN there."""
    matrix = value_matrix(board)
    tasks = _ordered_tasks(board)
    columns: dict[str, pd.Series] = {}
    for label in [t for t in TYPE_ORDER if t in set(tasks["type"])]:
        names = tasks.loc[tasks["type"] == label, "task"]
        columns[f"{label} ({len(names)})"] = matrix[names].mean(axis=1, skipna=False)
    columns[f"ALL ({len(tasks)})"] = matrix[tasks["task"]].mean(axis=1, skipna=False)
    return pd.DataFrame(columns)


def render_markdown(board: pd.DataFrame) -> str:
    """The per-type table (paper layout, ×100) followed by the per-task table."""
    means = type_means(board)
    type_rows = [[name, *(_cell(v) for v in row)] for name, row in means.iterrows()]
    matrix = value_matrix(board)
    tasks = _ordered_tasks(board)
    task_rows = [
        [task, label, *(_cell(matrix.at[model, task]) for model in matrix.index)]
        for task, label in zip(tasks["task"], tasks["type"])
    ]
    return "\n\n".join(
        [
            "## nDCG@10 by type (mean over tasks, ×100)",
            markdown_table(["model", *means.columns], type_rows),
            "## nDCG@10 per task (×100)",
            markdown_table(["task", "type", *matrix.index], task_rows),
            "An empty cell: the task was not run or the model does not take its modalities; "
            "a type or ALL cell is empty unless the model has every task it averages.",
        ]
    )
