"""The `mrb` command: thin wrappers around the Python API."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from rich.console import Console
from rich.table import Table

from mrb import __version__
from mrb.errors import MRBError
from mrb.io import os_error
from mrb.options import RunOptions

# Options handed to the reranker only when the user gives them (adapters reject options they do not take).
TASK_DIR_HELP = "add the task YAML of this folder to the bundled catalogue (repeatable); `all` then means its tasks"
MODEL_OPTIONS = (
    "device",
    "dtype",
    "attn_implementation",
    "max_length",
    "min_pixels",
    "max_pixels",
    "trust_remote_code",
    "prefix_sharing",
    "format",
    "window",
    "stride",
    "first_token_logits",
)


def add_options(parser: argparse.ArgumentParser, options: type) -> None:
    """One flag per field of the dataclass `options` (``batch_size`` → ``--batch-size``), with its type,
    choices, default and help taken from the field, so each default is written once."""
    hints = get_type_hints(options)
    for spec in fields(options):
        kind = hints[spec.name]
        choices = get_args(kind) if get_origin(kind) is Literal else None
        convert: Any = next((t for t in (get_args(kind) or (kind,)) if t is not type(None)), str)
        text = spec.metadata["help"]
        parser.add_argument(
            "--" + spec.name.replace("_", "-"),
            type=str if choices else convert,
            choices=choices,
            default=spec.default,
            help=text if "default:" in text else f"{text} (default: {spec.default})",
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrb", description="MRB: the Multimodal Reranking Benchmark")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("--version", action="version", version=f"mrb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    verbosity = argparse.ArgumentParser(add_help=False)
    verbosity.add_argument("-v", "--verbose", action="count", default=0, help="say more: -v what MRB does, -vv debugging detail")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="only errors, and no progress bars")

    run = sub.add_parser("run", parents=[verbosity], help="rerank tasks with a model and write nDCG@10 results")
    run.add_argument("--model", required=True, help="preset name (see `mrb models`) or checkpoint folder with --adapter")
    run.add_argument("--adapter", help="adapter that loads a checkpoint folder given as --model")
    run.add_argument("--name", help="the model's name in the results (default: the preset's, or the checkpoint as given)")
    run.add_argument("--tasks", default="mini", help="all, names, globs, type codes, categories or suites (comma-separated)")
    run.add_argument("--task-dir", action="append", help=TASK_DIR_HELP)
    run.add_argument("--data-dir", help="where source mirrors and packs live (default: $MRB_DATA_DIR, else ~/.cache/mrb)")
    run.add_argument("--output", default="results", help="results folder (default: results)")
    add_options(run, RunOptions)
    run.add_argument("--device", help="cuda, cpu or mps (default: cuda when available)")
    run.add_argument("--dtype", help="bf16, fp16 or fp32 (default: bf16 on GPU, fp32 on CPU)")
    run.add_argument("--attn-implementation", help="sdpa (default) or flash_attention_2")
    run.add_argument("--max-length", type=int)
    run.add_argument("--min-pixels", type=int)
    run.add_argument("--max-pixels", type=int)
    run.add_argument("--trust-remote-code", action="store_true", default=None, help="allow a model's own code from its repo")
    run.add_argument(
        "--no-prefix-sharing",
        dest="prefix_sharing",
        action="store_false",
        default=None,
        help="run every pair whole instead of a query's common prefix once (chat rerankers; for comparison)",
    )
    run.add_argument(
        "--fallback",
        choices=("image-only", "text-only"),
        help="feed an image+text side the model lacks as its image or its text (results marked adapted); default: off",
    )
    run.add_argument("--window", type=int, help="listwise rerankers: candidates per window (default: the preset's)")
    run.add_argument(
        "--stride", type=int, help="listwise rerankers: places a window moves towards the top (default: the preset's)"
    )
    run.add_argument("--prompt-format", dest="format", help="listwise chat rerankers: rank-zephyr, rank-zephyr-alpha or lighton")
    run.add_argument(
        "--first-token-logits",
        action="store_true",
        default=None,
        help="listwise chat rerankers: order a window by the logits of its labels at the answer's first label (FIRST)",
    )
    run.add_argument("--build-missing", action="store_true", help="build missing candidate packs with each task's first stage")
    run.add_argument(
        "--dry-run", action="store_true", help="check the packs and print the plan (pairs, cached, time, disk), then stop"
    )

    report = sub.add_parser(
        "report", parents=[verbosity], help="leaderboard tables from results folders, beside the paper's numbers"
    )
    report.add_argument("--results", action="append", help="results folder; repeat to combine several (default: results)")
    report.add_argument(
        "--format",
        choices=("markdown", "csv", "json", "chart", "png", "html"),
        default="markdown",
        help="markdown (default), csv, json, chart (png is the same): PNG, PDF or SVG by --output's extension, or "
        "html: a static site in the --output folder (the chart and html need pip install 'mrb[plot]')",
    )
    report.add_argument("--output", help="write to this file instead of printing (required for a chart; a folder for html)")
    report.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="paired comparison of model B against model A ('first stage' may be either)",
    )
    report.add_argument("--borda", action="store_true", help="add a Borda rank over tasks")
    shown = report.add_mutually_exclusive_group()
    shown.add_argument(
        "--reported",
        action="store_true",
        help="show the paper's reported numbers even when the results hold tasks outside the paper's suite",
    )
    shown.add_argument("--no-reported", dest="reported", action="store_false", help="leave out the paper's reported numbers")
    report.set_defaults(reported=None)  # by default: beside results of the paper's suite only
    report.add_argument(
        "--depths",
        metavar="LIST",
        help="the depth ablation instead of the leaderboard: rerank only the top d of the first stage, for each d of "
        "LIST (e.g. 10,25,50,100), from the cached scores of the runs (nothing is scored again)",
    )
    report.add_argument("--cache-dir", help="the runs' score cache, for --depths (default: RESULTS/cache of each folder)")
    report.add_argument(
        "--task-dir", action="append", help="a folder of your own tasks' YAML (repeatable), for --depths and html"
    )
    report.add_argument("--data-dir", help="where packs live, for --depths and html (default: $MRB_DATA_DIR, else ~/.cache/mrb)")
    report.add_argument(
        "--queries-per-task",
        type=int,
        default=20,
        help="html: pages for the N largest wins and losses (half each) per task of each model over the first stage, "
        "or of B over A with --compare (default: 20)",
    )
    report.add_argument("--max-size-mb", type=float, default=300, help="html: the most the site may take (default: 300)")
    report.add_argument("--allow-mixed", action="store_true", help="report tasks scored on different packs or metric settings")
    report.add_argument("--export-mteb", metavar="DIR", help="also write MTEB-style per-task results JSON under DIR")

    tasks = sub.add_parser("tasks", parents=[verbosity], help="list the task catalogue")
    tasks.add_argument("--tasks", default="all", help="selection, as for `mrb run`")
    tasks.add_argument("--suite", help="shorthand for --tasks SUITE")
    tasks.add_argument("--task-dir", action="append", help=TASK_DIR_HELP)

    sub.add_parser("models", parents=[verbosity], help="list the model presets")

    download = sub.add_parser("download", parents=[verbosity], help="mirror the hub data of tasks for offline runs")
    download.add_argument("--tasks", required=True, help="selection, as for `mrb run`")
    download.add_argument("--data-dir", help="where source mirrors and packs live (default: $MRB_DATA_DIR, else ~/.cache/mrb)")
    download.add_argument("--task-dir", action="append", help=TASK_DIR_HELP)

    candidates = sub.add_parser("candidates", parents=[verbosity], help="build, verify and summarise first-stage candidate packs")
    actions = candidates.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="retrieve each query's top candidates from the raw source and write the pack")
    build.add_argument(
        "--retriever",
        help="gme-qwen2-vl-2b, minilm, clip, or given: the source's own top_ranked lists (default: each task's first_stage)",
    )
    build.add_argument("--checkpoint", help="load the retriever from this folder or hub id instead of its default")
    build.add_argument("--push-to-hub", metavar="REPO", help="also upload each pack to this hub dataset repo")
    build.add_argument("--batch-size", type=int, default=32, help="records per forward pass")
    build.add_argument("--shard-size", type=int, help="records per embedding shard, the unit of resumption (default 4096)")
    build.add_argument("--device")
    build.add_argument("--dtype")
    imported = actions.add_parser("import", help="write a task's pack from a given first-stage run (TREC, Parquet or CSV)")
    imported.add_argument(
        "--run", required=True, help="a TREC run file, or a Parquet / CSV file of query_id, doc_id, score[, rank]"
    )
    imported.add_argument(
        "--format", choices=("trec", "parquet", "csv"), help="the run's format (default: from its suffix; TREC otherwise)"
    )
    for action in (build, imported):
        action.add_argument("--depth", type=int, help="candidates per query (default: the task's depth, 100 for MRB)")
        action.add_argument("--sample", type=int, help="build on a seeded sample of this many queries per task")
        action.add_argument("--seed", type=int, help="seed of --sample (default 0)")
        action.add_argument("--out", help="write packs to OUT/<task> instead of the data dir")
    export = actions.add_parser("export", help="write packs as datasets other tools read: DIR/<task>")
    export.add_argument(
        "--format",
        required=True,
        choices=("mteb",),
        help="mteb: an MTEB 2.x reranking dataset (corpus, queries, default, top_ranked)",
    )
    export.add_argument("dir", help="folder to write into")
    pull = actions.add_parser("pull", help="fetch published packs from a hub dataset repo into the data dir")
    pull.add_argument("--repo", required=True, help="the dataset repo the packs were pushed to")
    pull.add_argument("--revision", help="a commit, branch or tag of that repo")
    push = actions.add_parser("push", help="verify the packs of tasks and upload them to a hub dataset repo")
    push.add_argument("--repo", required=True, help="the dataset repo to upload to (created if missing)")
    for action in (
        build,
        imported,
        export,
        pull,
        push,
        actions.add_parser("verify", help="re-hash the packs of tasks against their manifests"),
        actions.add_parser("stats", help="first-stage nDCG@10, Recall@100 and pair counts of packs"),
    ):
        action.add_argument("--tasks", required=True, help="selection, as for `mrb run`")
        action.add_argument("--data-dir", help="where source mirrors and packs live (default: $MRB_DATA_DIR, else ~/.cache/mrb)")
        action.add_argument("--task-dir", action="append", help=TASK_DIR_HELP)
    return parser


def _run(args: argparse.Namespace) -> None:
    from mrb.report import render_markdown
    from mrb.session import Session

    model_options = {k: getattr(args, k) for k in MODEL_OPTIONS if getattr(args, k) is not None}
    run_options = RunOptions(**{f.name: getattr(args, f.name) for f in fields(RunOptions)})
    session = Session(
        args.model,
        args.tasks,
        run_options,
        output_dir=Path(args.output),
        adapter=args.adapter,
        name=args.name,
        model_options=model_options,
        task_dirs=args.task_dir,
        data_dir=args.data_dir,
        build_missing=args.build_missing,
        quiet=args.quiet,
        dry_run=args.dry_run,
        fallback=args.fallback,
    )
    board = session.run()
    if board.empty:  # a torchrun rank other than 0
        return
    print(render_markdown(board))
    print(f"\nResults written to {args.output}/ (leaderboard.parquet, per-task Parquet and TREC run files).")


def _report(args: argparse.Namespace) -> None:
    from mrb import report
    from mrb.export import export_mteb
    from mrb.results import guard_consistency, read_leaderboards

    chart = args.format in ("chart", "png")
    if chart and (args.compare or not args.output):
        raise MRBError(
            "--format chart draws the leaderboard chart into a file: give --output FILE.png, FILE.pdf or FILE.svg "
            "(and no --compare)"
        )
    html = args.format == "html"
    if html and not args.output:
        raise MRBError("--format html writes a site into a folder: give --output DIR")
    if args.depths and args.compare and not html:
        raise MRBError("--depths reports the depth ablation and --compare a paired comparison: ask for one at a time")
    board = read_leaderboards(args.results or ["results"])
    notes = guard_consistency(board, allow_mixed=args.allow_mixed)
    if args.export_mteb:
        written = export_mteb(board, args.export_mteb)
        print(f"MTEB-style results: {len(written)} file(s) under {args.export_mteb}/", file=sys.stderr)

    def summary() -> report.Summary:
        """The leaderboard's summary with the consistency notes (what the tables, the chart and the site show)."""
        out = report.summarise(board, report.reported_for(board, report.load_reported(), args.reported), borda=args.borda)
        out.notes.extend(notes)
        return out

    summaries = None
    if args.depths:
        from mrb.depths import depth_board, parse_depths

        cache = Path(args.cache_dir) if args.cache_dir else None
        rows = depth_board(board, parse_depths(args.depths), cache_dir=cache, task_dirs=args.task_dir, data_dir=args.data_dir)
        summaries = report.depth_summaries(rows)
    if html:
        from mrb.html import write_site

        site = write_site(
            board,
            summary(),
            Path(args.output),
            compare=tuple(args.compare) if args.compare else None,
            depths=summaries,
            queries_per_task=args.queries_per_task,
            max_mb=args.max_size_mb,
            task_dirs=args.task_dir,
            data_dir=args.data_dir,
        )
        print(
            f"site written to {site.folder / 'index.html'}: {site.pages} pages, {site.thumbnails} thumbnails, "
            f"{site.bytes / 2**20:.1f} MB",
            file=sys.stderr,
        )
        return
    if summaries is not None:
        if chart:
            report.save_chart(report.draw_depth_chart(summaries), Path(args.output), report.chart_format(Path(args.output)))
            print(f"chart written to {args.output}", file=sys.stderr)
            return
        text = {"markdown": report.depth_markdown, "csv": report.depth_csv, "json": report.depth_json}[args.format](summaries)
    elif args.compare:
        comparison = report.compare_models(board, *args.compare)
        comparison.notes.extend(notes)
        text = report.render_comparison(comparison, args.format)
    else:
        summarised = summary()
        if chart:
            report.to_chart(summarised, board, Path(args.output))
            print(f"chart written to {args.output}", file=sys.stderr)
            return
        text = {"markdown": report.to_markdown, "csv": report.to_csv, "json": report.to_json}[args.format](summarised)
    if args.output:
        Path(args.output).write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    else:
        print(text, end="" if text.endswith("\n") else "\n")


def _tasks(args: argparse.Namespace) -> None:
    from mrb.tasks import load_tasks

    specs = load_tasks(args.suite or args.tasks, task_dirs=args.task_dir)
    table = Table(title=f"MRB tasks: {args.suite or args.tasks} ({len(specs)})")
    for column in ("name", "type", "category", "metric", "depth", "instruction"):
        table.add_column(column)
    for t in specs:
        table.add_row(t.name, t.type.label, t.category.value, t.metric, str(t.depth), t.instruction)
    console = Console()
    console.print(table)
    counts = Counter(t.type.label for t in specs)
    console.print("per type: " + ", ".join(f"{label} {n}" for label, n in counts.items()))


def _models(args: argparse.Namespace) -> None:
    """One block per preset, wrapped to the terminal: its name whole on the first line, then what it runs."""
    import shutil
    import textwrap

    from mrb.rerankers.presets import PRESETS

    width = max(40, shutil.get_terminal_size((100, 24)).columns)
    print(textwrap.fill("MRB model presets (settings left 'auto': bf16 on GPU, fp32 on CPU; flash-attn when installed)", width))
    for p in PRESETS.values():
        facts = [p.adapter, p.modalities, p.parameters, p.license]
        if p.hub_id:
            facts.insert(1, f"{p.hub_id} ({p.revision[:12] if p.revision else 'not pinned'})")
        print()
        print(
            textwrap.fill(
                f"{p.name}{' *' if p.unverified else ''}: " + " · ".join(f for f in facts if f),
                width,
                subsequent_indent="    ",
                break_on_hyphens=False,
                break_long_words=False,
            )
        )
        if p.hub_id:
            pixels = f"{p.min_pixels}–{p.max_pixels}" if p.min_pixels or p.max_pixels else "the checkpoint's"
            shown = f"pixels {pixels}, " if p.modalities == "all" or "I" in p.modalities else ""  # image models only
            length = p.max_length or "the adapter's default"
            settings = f"dtype {p.dtype or 'auto'}, attention {p.attn_implementation or 'auto'}, {shown}max length {length}"
            print(textwrap.fill(settings, width, initial_indent="    ", subsequent_indent="    ", break_long_words=False))
        if p.unverified:
            print(
                textwrap.fill(
                    f"* unverified: {p.unverified}",
                    width,
                    initial_indent="    ",
                    subsequent_indent="      ",
                    break_long_words=False,
                )
            )


def _download(args: argparse.Namespace) -> None:
    from mrb.sources import download
    from mrb.tasks import load_tasks

    for folder in download(load_tasks(args.tasks, task_dirs=args.task_dir), args.data_dir):
        print(folder)


def _candidates(args: argparse.Namespace) -> None:
    from mrb import candidates
    from mrb.tasks import SampleSpec, load_tasks

    tasks = load_tasks(args.tasks, task_dirs=args.task_dir)
    if args.action == "pull":
        for unit, folder in candidates.pull_packs(tasks, args.repo, data_dir=args.data_dir, revision=args.revision):
            print(f"{unit.name}: {folder}")
        return
    if args.action == "export":
        from mrb.candidates.export_pack import export_mteb

        for unit, folder in candidates.pack_folders(tasks, args.data_dir):
            print(f"{unit.name}: {export_mteb(folder, unit, args.dir)}")
        return
    if args.action in ("verify", "push"):
        for unit, folder in candidates.verify_packs(tasks, args.data_dir):
            commit = f", pushed: {candidates.push_pack(folder, args.repo)}" if args.action == "push" else ""
            print(f"{unit.name}: ok ({folder}){commit}")
        return
    if args.action == "stats":
        packs = candidates.pack_folders(tasks, args.data_dir)
    else:
        if args.seed is not None and args.sample is None:
            raise MRBError("--seed goes with --sample")
        sample = SampleSpec(queries=args.sample, seed=args.seed or 0) if args.sample is not None else None
        logging.getLogger("mrb.candidates").setLevel(logging.INFO)
        if args.action == "import":
            if len(tasks) != 1:
                raise MRBError(f"a run file gives the lists of one task; --tasks {args.tasks} selects {len(tasks)}")
            built = [
                candidates.import_run(
                    tasks[0], args.run, format=args.format, depth=args.depth, sample=sample, out=args.out, data_dir=args.data_dir
                )
            ]
        else:
            options = {k: getattr(args, k) for k in ("device", "dtype") if getattr(args, k) is not None}
            built = candidates.build_candidates(
                tasks,
                args.retriever,
                checkpoint=args.checkpoint,
                depth=args.depth,
                sample=sample,
                out=args.out,
                data_dir=args.data_dir,
                batch_size=args.batch_size,
                shard_size=args.shard_size,
                push_to_hub=args.push_to_hub,
                **options,
            )
        units = {unit.name: unit for task in tasks for unit in task.units()}
        packs = [(units[result.task], result.pack) for result in built]
    if not packs:  # a torchrun rank other than 0 only embeds
        return
    stats = candidates.pack_stats(packs)
    for column in ("first_stage", "R@100"):
        stats[column] = stats[column].map(lambda v: f"{100 * v:.2f}")
    print(stats.to_string(index=False))


class StderrHandler(logging.StreamHandler):
    """A stream handler on whatever `sys.stderr` is when a line is written (a notebook or a test may replace it
    after `main` set logging up), not on the stream of that moment."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        """logging.StreamHandler sets it; the stream is always the current sys.stderr."""


def configure_logging(verbosity: int) -> None:
    """MRB's log lines at `verbosity` (-1 errors only, 0 warnings, 1 what MRB does, 2 debugging), other libraries'
    warnings, on stderr: through rich on a terminal, so they print above the progress bars instead of through them."""
    from mrb.progress import STDERR

    handler: logging.Handler
    if STDERR.is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(console=STDERR, show_time=False, show_path=False, markup=False, highlighter=None)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.set_name("mrb")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "mrb"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.ERROR if verbosity < 0 else logging.DEBUG if verbosity > 1 else logging.WARNING)
    for library in ("huggingface_hub", "datasets"):  # they print through a handler of their own and then propagate:
        logging.getLogger(library).handlers.clear()  # each of their warnings (a retry, say) came out twice
    logging.getLogger("mrb").setLevel({-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))


def _reader_gone() -> int:
    """The end of a pipe closed early (`mrb report | head -1`): stop quietly, as a command killed by SIGPIPE
    does, with stdout pointed at /dev/null so that the interpreter's last flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):  # stdout may be no file at all (a test's capture)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 128 + signal.SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(-1 if args.quiet else args.verbose)
    handler = {
        "run": _run,
        "report": _report,
        "tasks": _tasks,
        "models": _models,
        "download": _download,
        "candidates": _candidates,
    }[args.command]
    try:
        handler(args)
    except BrokenPipeError:
        return _reader_gone()
    except (MRBError, OSError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"mrb: error: {exc if isinstance(exc, MRBError) else os_error(exc.filename or '?', exc, 'use')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mrb: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
