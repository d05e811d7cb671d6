"""Writing the explorer: what each page holds, which queries get one, and the size limit of the site.

The site is written into a staging folder beside the output folder and moved into place when it is
complete, so a failed or oversized report leaves the old site (or nothing) behind. Every file counts
against the size limit; the queries shown per task (the largest wins and losses) are what bounds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from mrb import __version__, report
from mrb.data import Pack, Record
from mrb.errors import MRBError
from mrb.evaluation import TaskEvaluator
from mrb.html.assets import SORT_SCRIPT, STYLE
from mrb.html.markup import esc, page, paragraphs, table
from mrb.html.thumbnails import Thumbnails
from mrb.io import safe_filename
from mrb.report import FIRST_STAGE, MEASURE_HEADERS, Cell, Comparison, Summary
from mrb.results import read_per_query, read_trec
from mrb.scored import result_task, scored_packs
from mrb.tasks import TaskSpec

MARKER = "mrb-site.json"  # names a folder as an MRB site, which a later report may replace
TOP = 10  # documents shown per list
SNIPPET = 300  # characters of a document's text shown before the rest is folded


@dataclass
class SiteStats:
    """What a written site holds."""

    folder: Path
    pages: int = 0
    thumbnails: int = 0
    bytes: int = 0


def task_page(task: str) -> str:
    return f"tasks/{safe_filename(task)}.html"


def query_page(task: str, query_id: str) -> str:
    """A query's page: its id made safe, with a digest of the id so that two ids never share a file."""
    digest = hashlib.sha256(query_id.encode()).hexdigest()[:8]
    return f"queries/{safe_filename(task)}/{safe_filename(query_id)}-{digest}.html"


@dataclass
class _Output:
    """The staging folder: every write counts against `max_mb` megabytes (MiB)."""

    folder: Path
    max_mb: float
    queries_per_task: int
    stats: SiteStats
    where: str = "the leaderboard"

    def write(self, path: str, data: str | bytes) -> None:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        if self.stats.bytes + len(raw) > self.max_mb * 2**20:
            raise MRBError(
                f"the HTML report would pass --max-size-mb {self.max_mb:g} while writing {self.where}: lower "
                f"--queries-per-task (now {self.queries_per_task}) or raise --max-size-mb; nothing was written to "
                f"{self.stats.folder}"
            )
        target = self.folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(raw)
        self.stats.bytes += len(raw)
        self.stats.pages += path.endswith(".html")


@dataclass
class _Focus:
    """One comparison whose per-query differences a task page shows: B − A (A may be the first stage)."""

    a: str
    b: str
    deltas: pd.Series  # query id → B − A, in query-id order

    @property
    def title(self) -> str:
        return f"{self.b} − {self.a}"

    def wins(self, n: int) -> pd.Series:
        return self.deltas[self.deltas > 0].sort_values(ascending=False, kind="stable").head(n)

    def losses(self, n: int) -> pd.Series:
        return self.deltas[self.deltas < 0].sort_values(kind="stable").head(n)


def _linked(task: Cell, linked: bool = True) -> Cell:
    """A task's cell linked to its page (when the site has one)."""
    return replace(task, href=task_page(task.text)) if linked else task


def _by_query(ranking: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """A ranking's rows per query, in rank order."""
    return {str(q): rows for q, rows in ranking.sort_values(["query_id", "rank"]).groupby("query_id", sort=False)}


@dataclass(frozen=True)
class _Listed:
    """What every list of one query page is read against."""

    labels: dict[str, int]  # doc → relevance label
    ranks: dict[str, int]  # doc → rank in the first stage's list as evaluated (identical ids dropped, 1…n)
    pack_ranks: dict[str, int]  # doc → rank in the pack (what the reranked depth cuts)


@dataclass
class _Task:
    """What the pages of one task are made of (read when its pages are written, released after)."""

    spec: TaskSpec
    rows: dict[str, dict[str, Any]]  # model → its leaderboard row
    per_query: dict[str, pd.DataFrame]  # model → per-query values, indexed by query id
    rankings: dict[str, pd.DataFrame]  # model → its reranked lists (query_id, doc_id, rank, score)
    units: dict[str, tuple[TaskSpec, Pack]]  # part ("" for a plain task) → unit and pack
    first_stage: dict[str, pd.DataFrame] = field(default_factory=dict)  # query → the first stage's whole list as evaluated

    def record(self, query_id: str, role: str, record_id: str) -> Record:
        part, _ = self.split(query_id)
        pack = self.units[part][1]
        return (pack.queries if role == "query" else pack.documents)[record_id]

    def split(self, query_id: str) -> tuple[str, str]:
        """(part, the id in the part's pack) of a result's query id (``<part>/<id>`` in a composite task)."""
        if self.spec.parts:
            part, _, raw = query_id.partition("/")
            return part, raw
        return "", query_id


def write_site(
    board: pd.DataFrame,
    summary: Summary,
    out: Path,
    *,
    compare: tuple[str, str] | None = None,
    depths: dict[int, Summary] | None = None,
    queries_per_task: int = 20,
    max_mb: float = 300,
    task_dirs: list[str | Path] | None = None,
    data_dir: str | Path | None = None,
) -> SiteStats:
    """Write the explorer of `board` (its `summary` as the leaderboard page) into the folder `out`.

    Per task, the `queries_per_task` largest wins and losses (half each) of each model over the first stage,
    or of B over A with `compare`, get a page. The site stays under `max_mb` megabytes or is not written.
    """
    if queries_per_task < 1:
        raise MRBError(f"--queries-per-task must be at least 1, got {queries_per_task}")
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / MARKER).is_file())):
        raise MRBError(f"{out} exists and is not an MRB report site (no {MARKER}): choose another --output folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    stats = SiteStats(out)
    output = _Output(staging, max_mb, queries_per_task, stats)
    try:
        _Site(board, summary, output, compare, depths, queries_per_task, task_dirs, data_dir).write()
        _move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return stats


def _move_into_place(staging: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old)
    else:
        staging.rename(out)


class _Site:
    def __init__(
        self,
        board: pd.DataFrame,
        summary: Summary,
        output: _Output,
        compare: tuple[str, str] | None,
        depths: dict[int, Summary] | None,
        queries_per_task: int,
        task_dirs: list[str | Path] | None,
        data_dir: str | Path | None,
    ) -> None:
        self.board, self.summary, self.output = board, summary, output
        self.compare, self.depths, self.n = compare, depths, queries_per_task
        self.task_dirs, self.data_dir = task_dirs, data_dir
        self.thumbnails = Thumbnails(output.write)
        self.ok = board[board["status"] == "ok"]
        self.models = list(dict.fromkeys(self.ok["model"]))
        # per-task tests for the task pages (the ALL test only for the comparison the leaderboard page shows)
        self.tests = {(FIRST_STAGE, m): report.compare_models(board, FIRST_STAGE, m, overall=False) for m in self.models}
        if compare is not None:
            self.tests[compare] = report.compare_models(board, *compare)

    def write(self) -> None:
        self.output.write("assets/style.css", STYLE)
        self.output.write("assets/sort.js", SORT_SCRIPT)
        for task in self.summary.tasks["task"]:
            if task in set(self.ok["task"]):
                self.output.where = f"the pages of task {task}"
                self._task(self._read(task))
        self.output.where = "the leaderboard"
        self.output.write("index.html", self._leaderboard())
        marker = {
            "mrb_version": __version__,
            "results": list(dict.fromkeys(self.board["results_dir"])),
            "queries_per_task": self.n,
            "thumbnails": len(self.thumbnails.written),
        }
        self.output.write(MARKER, json.dumps(marker, indent=2) + "\n")
        self.output.stats.thumbnails = len(self.thumbnails.written)

    # ── reading ──────────────────────────────────────────────────────────────────────────

    def _read(self, task: str) -> _Task:
        rows = {row["model"]: row for row in self.ok[self.ok["task"] == task].to_dict("records")}
        first = next(iter(rows.values()))
        for model, row in rows.items():
            if row["pack_hash"] != first["pack_hash"]:
                raise MRBError(
                    f"task {task}: {model!r} and {first['model']!r} were scored on different packs; the explorer shows "
                    "one pack per task (report those results separately)"
                )
        spec = result_task(task, self.task_dirs)
        packs = scored_packs(spec, first, self.data_dir)
        units = {(unit.name if spec.parts else ""): (unit, pack) for unit, pack in packs}
        view = _Task(
            spec,
            rows,
            {m: read_per_query(r["results_dir"], m, task).set_index("query_id") for m, r in rows.items()},
            {m: _by_query(read_trec(r["results_dir"], m, task).query(f"rank <= {TOP}")) for m, r in rows.items()},
            units,
        )
        lists = []
        for part, (unit, pack) in units.items():
            evaluator = TaskEvaluator(unit.model_copy(update={"depth": int(first["depth"])}), pack)
            ranking = evaluator.first_stage_ranking.drop(columns="score")  # shown with the first stage's own scores
            ranking = ranking.merge(pack.candidates[["query_id", "doc_id", "score"]], on=["query_id", "doc_id"])
            lists.append(ranking.assign(query_id=(part + "/" if part else "") + ranking["query_id"]))
        view.first_stage = _by_query(pd.concat(lists, ignore_index=True))
        return view

    def _foci(self, view: _Task) -> tuple[list[_Focus], list[_Focus]]:
        """(the comparisons whose wins and losses get pages, every comparison drawn on the task page)."""

        per_query = view.per_query
        per_model = [
            _Focus(FIRST_STAGE, m, (per_query[m]["value"] - per_query[m]["first_stage_value"]).sort_index()) for m in view.rows
        ]
        if self.compare is None or not all(m == FIRST_STAGE or m in view.rows for m in self.compare):
            return per_model, per_model
        a, b = self.compare
        holder = b if a == FIRST_STAGE else a  # whose per-query file holds the first stage's values, if one side is it

        def values(model: str) -> pd.Series:
            return per_query[holder]["first_stage_value"] if model == FIRST_STAGE else per_query[model]["value"]

        pair = _Focus(a, b, (values(b) - values(a)).sort_index())
        return [pair], [*per_model, pair]

    # ── pages ────────────────────────────────────────────────────────────────────────────

    def _task(self, view: _Task) -> None:
        shown, drawn = self._foci(view)
        half = (self.n + 1) // 2
        order: list[str] = []
        sections = []
        for focus in shown:
            wins, losses = focus.wins(half), focus.losses(self.n - half)
            order += [q for q in [*wins.index, *losses.index] if q not in order]
            for title, picked in (
                (f"Largest wins of {focus.b} over {focus.a}", wins),
                (f"Largest losses of {focus.b} to {focus.a}", losses),
            ):
                sections.append(f"<h2>{esc(title)}</h2>" + self._query_table(view, focus, picked))
        name = view.spec.name
        fig = report.draw_gain_histograms(self.summary.metric, [(f.title, f.deltas.to_numpy(), self._colour(f)) for f in drawn])
        body = [
            f"<p>{esc(view.spec.type.label)} · {esc(view.spec.category.value)} · {len(next(iter(view.per_query.values())))} "
            f"queries · depth {esc(next(iter(view.rows.values()))['depth'])} · {esc(view.spec.instruction)}</p>",
            "<h2>Values</h2>" + self._values_table(view),
            "<h2>Paired tests</h2>" + self._tests_table(name),
            f"<h2>Per-query differences ({esc(self.summary.metric)})</h2>",
            f'<div class="chart">{report.chart_svg(fig)}</div>',
            *sections,
        ]
        crumbs = [("leaderboard", "index.html")]
        self.output.write(task_page(name), page(f"{name}", "\n".join(body), root="../", crumbs=crumbs, script=True))
        for i, query_id in enumerate(order):
            neighbours = (order[i - 1] if i else None, order[i + 1] if i + 1 < len(order) else None)
            self.output.write(query_page(name, query_id), self._query(view, query_id, neighbours))

    def _colour(self, focus: _Focus) -> str:
        """A model's colour in the charts (the first stage is C0, the models follow); grey for a pair of models."""
        rows = [label for label in self.summary.table.index if self.summary.kind[label] != "reported"]
        return f"C{rows.index(focus.b)}" if focus.a == FIRST_STAGE else "C7"

    def _values_table(self, view: _Task) -> str:
        rows = []
        first = next(iter(view.rows.values()))
        rows.append([Cell(FIRST_STAGE), report.value_cell(first["first_stage_value"]), Cell(""), *([Cell("")] * 2)])
        for model, row in view.rows.items():
            marks = report.task_marks(self.summary, model, view.spec.name)
            rows.append(
                [
                    Cell(model + (f" {marks}" if marks else "")),
                    report.value_cell(row["value"]),
                    Cell(f"{report.cell(row['ci_low'])}–{report.cell(row['ci_high'])}"),
                    *(report.value_cell(row[m]) for m in ("RR@10", "R@10")),
                ]
            )
        return table(["model", self.summary.metric, "95% CI", MEASURE_HEADERS["RR@10"], MEASURE_HEADERS["R@10"]], rows)

    def _tests_table(self, task: str) -> str:
        rows = []
        for (a, b), comparison in self.tests.items():
            found = comparison.table[comparison.table["task"] == task]
            if len(found):
                row = found.iloc[0]
                rows.append(
                    [
                        Cell(f"{b} − {a}"),
                        Cell(str(row["queries"]), float(row["queries"])),
                        Cell(report.cell(row["delta"], signed=True), float(row["delta"])),
                        Cell(f"{row['p_value']:.4f}", float(row["p_value"])),
                    ]
                )
        note = paragraphs(
            [f"Paired randomisation test: {report.PERMUTATIONS} random sign flips of the per-query differences, two-sided."]
        )
        return table(["comparison", "queries", "Δ (×100)", "p"], rows) + note

    def _query_table(self, view: _Task, focus: _Focus, picked: pd.Series) -> str:
        rows = []
        for query_id, delta in picked.items():
            text = view.record(str(query_id), "query", view.split(str(query_id))[1]).text or "(image)"
            rows.append(
                [
                    Cell(str(query_id), href=f"../{query_page(view.spec.name, str(query_id))}"),
                    Cell(text[:120] + ("…" if len(text) > 120 else "")),
                    Cell(report.cell(delta, signed=True), float(delta)),
                ]
            )
        if not rows:
            return "<p>None.</p>"
        return table(["query", "text", f"Δ {focus.title} (×100)"], rows)

    def _query(self, view: _Task, query_id: str, neighbours: tuple[str | None, str | None]) -> str:
        name = view.spec.name
        part, raw = view.split(query_id)
        query = view.record(query_id, "query", raw)
        thumb = self.thumbnails.path_of(query)
        image = f'<img src="../../{esc(thumb)}" alt="query {esc(query_id)}">' if thumb else ""
        text = f'<p class="text query-text">{esc(query.text)}</p>' if query.text else ""
        values = [[Cell(FIRST_STAGE), report.value_cell(next(iter(view.per_query.values())).at[query_id, "first_stage_value"])]]
        values += [[Cell(m), report.value_cell(view.per_query[m].at[query_id, "value"])] for m in view.rows]
        first_stage = view.first_stage[query_id]
        qrels = view.units[part][1].qrels
        listed = _Listed(
            dict(zip(*qrels.loc[qrels["query_id"] == raw, ["doc_id", "relevance"]].to_numpy().T)),
            dict(zip(first_stage["doc_id"], first_stage["rank"].astype(int))),
            dict(zip(first_stage["doc_id"], first_stage["first_stage_rank"].astype(int))),
        )
        empty = pd.DataFrame(columns=["doc_id", "rank", "score"])
        lists = [self._list(view, query_id, FIRST_STAGE, first_stage[first_stage["rank"] <= TOP], listed)]
        lists += [self._list(view, query_id, m, view.rankings[m].get(query_id, empty), listed) for m in view.rows]
        pager = (
            '<div class="pager">'
            + "".join(
                f'<a href="../../{esc(query_page(name, q))}">{label}: {esc(q)}</a>'
                for label, q in zip(("← previous", "next →"), neighbours)
                if q is not None
            )
            + "</div>"
        )
        body = [
            pager,
            f'<p class="ids">task {esc(name)}{" · part " + esc(part) if part else ""} · query {esc(query_id)}</p>',
            f'<div class="record">{image}{text}</div>',
            "<h2>Values</h2>" + table(["model", self.summary.metric], values, sortable=False),
            f"<h2>Top {TOP}: the first stage and each model</h2>",
            '<div class="lists">' + "".join(lists) + "</div>",
            pager,
        ]
        crumbs = [("leaderboard", "index.html"), (name, task_page(name))]
        return page(f"{name}: query {query_id}", "\n".join(body), root="../../", crumbs=crumbs)

    def _list(self, view: _Task, query_id: str, model: str, ranking: pd.DataFrame, listed: _Listed) -> str:
        depth = int(view.rows[model]["depth"]) if model in view.rows else None
        items = []
        for doc_id, rank, score in ranking.sort_values("rank")[["doc_id", "rank", "score"]].itertuples(index=False):
            document = view.record(query_id, "document", doc_id)
            thumb = self.thumbnails.path_of(document)
            shown = f'<img src="../../{esc(thumb)}" alt="document {esc(doc_id)}">' if thumb else ""
            if document.text:
                snippet, rest = document.text[:SNIPPET], document.text[SNIPPET:]
                shown += (
                    f'<div class="snippet">{esc(snippet)}</div>'
                    if not rest
                    else f'<details class="snippet"><summary>{esc(snippet)}…</summary>{esc(rest)}</details>'
                )
            label = listed.labels.get(doc_id)
            badge = (
                '<span class="label unjudged">unjudged</span>'
                if label is None
                else f'<span class="label{" relevant" if int(label) >= 1 else ""}">rel {int(label)}</span>'
            )
            meta = [badge, f'<span class="score">score {score:.4g}</span>']
            if model != FIRST_STAGE:
                before = listed.ranks[doc_id]  # in the first stage's list as evaluated, as `rank` is in the model's
                moved = before - int(rank)
                arrow = f"▲{moved}" if moved > 0 else f"▼{-moved}" if moved < 0 else "="
                kind = "up" if moved > 0 else "down" if moved < 0 else "same"
                meta.append(f'<span class="move {kind}" title="first-stage rank {before}">{arrow}</span>')
                if depth is not None and listed.pack_ranks[doc_id] > depth:
                    meta.append('<span title="below the reranked depth">not reranked</span>')
            meta.append(f'<span class="ids">{esc(doc_id)}</span>')
            items.append(
                f'<li class="doc"><span class="rank">{int(rank)}</span><div>{shown}<div class="meta">{"".join(meta)}</div></div></li>'
            )
        return f'<section class="list"><h2>{esc(model)}</h2><ol>{"".join(items)}</ol></section>'

    # ── the leaderboard ──────────────────────────────────────────────────────────────────

    def _leaderboard(self) -> str:
        summary = self.summary
        body = [
            f"<h2>{esc(summary.metric)} by type, category and ALL (mean over tasks, ×100)</h2>",
            self._summary_table(summary),
            f'<div class="chart">{report.chart_svg(self._chart())}</div>',
            f"<h2>{esc(summary.metric)} per task (×100)</h2>",
            self._task_table(summary),
            "<h2>Per task: 95% bootstrap CI and the other measures (×100)</h2>",
            self._details_table(summary),
        ]
        if self.compare is not None:
            body += [f"<h2>{esc(self.compare[1])} vs {esc(self.compare[0])}: paired randomisation test</h2>"]
            body.append(self._comparison_table(self.tests[self.compare]))
        if self.depths:
            first = next(iter(self.depths.values()))
            body += [
                f"<h2>{esc(first.metric)} by reranking depth (from one pass, ×100)</h2>",
                table(*report.depth_rows(self.depths)),
                f'<div class="chart">{report.chart_svg(report.draw_depth_chart(self.depths))}</div>',
            ]
        body.append(paragraphs([report.BOLD_NOTE, *report.flag_notes(summary), *summary.notes]))
        return page("MRB report", "\n".join(body), root="", crumbs=[], script=True)

    def _chart(self) -> Any:
        intervals = report.column_intervals(self.board, self.summary, report.chart_columns(self.summary))
        return report.draw_chart(self.summary, intervals)

    def _summary_table(self, summary: Summary) -> str:
        return table(*report.summary_rows(summary))

    def _task_table(self, summary: Summary) -> str:
        header, rows = report.task_rows(summary)
        linked = set(self.ok["task"])
        return table(header, [[_linked(row[0], row[0].text in linked), *row[1:]] for row in rows])

    def _details_table(self, summary: Summary) -> str:
        header, rows = report.detail_rows(summary)
        return table(header, [[_linked(row[0]), *row[1:]] for row in rows])

    def _comparison_table(self, comparison: Comparison) -> str:
        header, rows = report.comparison_rows(comparison)
        return table(header, [[_linked(row[0], bool(row[1].text)), *row[1:]] for row in rows]) + paragraphs(comparison.notes)
