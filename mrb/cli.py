"""The `mrb` command: thin wrappers around the Python API."""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from mrb.errors import MRBError

# Options handed to the reranker only when the user gives them (adapters reject options they do not take).
MODEL_OPTIONS = ("device", "dtype", "attn_implementation", "max_length", "min_pixels", "max_pixels", "trust_remote_code")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrb", description="MRB: the Multimodal Reranking Benchmark")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="rerank tasks with a model and write nDCG@10 results")
    run.add_argument("--model", required=True, help="preset name (see `mrb models`) or checkpoint folder with --adapter")
    run.add_argument("--adapter", help="adapter that loads a checkpoint folder given as --model")
    run.add_argument("--tasks", default="mini", help="all, names, globs, type codes, categories or suites (comma-separated)")
    run.add_argument("--task-dir", action="append", help="read task YAML from this folder instead of the bundled catalogue")
    run.add_argument("--output", default="results", help="results folder (default: results)")
    run.add_argument("--batch-size", type=int, default=32, help="most pairs in one batch (default: 32)")
    run.add_argument("--max-batch-tokens", type=int, help="most padded tokens in one batch (pairs × longest pair; default: no budget)")
    run.add_argument("--workers", type=int, default=1, help="threads decoding images ahead of the model (default: 1; 0: inline)")
    run.add_argument("--overwrite", choices=("never", "missing", "always"), default="missing",
                     help="never: keep tasks with results; missing: score only what the cache lacks (default); always: rescore")
    run.add_argument("--cache-dir", help="score cache folder (default: OUTPUT/cache)")
    run.add_argument("--image-cache-mb", type=int, default=1024, help="bound on decoded images kept per task (default: 1024)")
    run.add_argument("--device", help="cuda, cpu or mps (default: cuda when available)")
    run.add_argument("--dtype", help="bf16, fp16 or fp32 (default: bf16 on GPU, fp32 on CPU)")
    run.add_argument("--attn-implementation", help="sdpa (default) or flash_attention_2")
    run.add_argument("--max-length", type=int)
    run.add_argument("--min-pixels", type=int)
    run.add_argument("--max-pixels", type=int)
    run.add_argument("--trust-remote-code", action="store_true", default=None, help="allow a model's own code from its repo")
    run.add_argument("--quiet", action="store_true", help="no progress bars")

    report = sub.add_parser("report", help="markdown tables from a results folder")
    report.add_argument("--results", default="results")

    tasks = sub.add_parser("tasks", help="list the task catalogue")
    tasks.add_argument("--tasks", default="all", help="selection, as for `mrb run`")
    tasks.add_argument("--suite", help="shorthand for --tasks SUITE")
    tasks.add_argument("--task-dir", action="append")

    sub.add_parser("models", help="list the model presets")
    return parser


def _run(args: argparse.Namespace) -> None:
    from mrb.api import evaluate
    from mrb.distributed import close_world, init_world
    from mrb.report import render_markdown

    options = {k: getattr(args, k) for k in MODEL_OPTIONS if getattr(args, k) is not None}
    world = init_world()
    try:
        board = evaluate(
            args.model, args.tasks, output_dir=args.output, batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens,
            workers=args.workers, overwrite=args.overwrite, cache_dir=args.cache_dir, image_cache_mb=args.image_cache_mb,
            adapter=args.adapter, task_dirs=args.task_dir, quiet=args.quiet, **options,
        )
    finally:
        close_world(world)
    if not world.is_main:
        return
    print(render_markdown(board))
    print(f"\nResults written to {args.output}/ (leaderboard.parquet, per-task Parquet and TREC run files).")


def _report(args: argparse.Namespace) -> None:
    from mrb.leaderboard import read_leaderboard
    from mrb.report import render_markdown

    print(render_markdown(read_leaderboard(args.results)))


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
    from mrb.rerankers.presets import PRESETS

    table = Table(title="MRB model presets")
    for column in ("name", "adapter", "checkpoint", "revision", "modalities", "params", "licence", "description"):
        table.add_column(column, overflow="fold")
    for p in PRESETS.values():
        revision = p.revision or ("not pinned" if p.hub_id else "")
        table.add_row(p.name, p.adapter, p.hub_id or "", revision, p.modalities, p.parameters, p.license, p.description)
    Console().print(table)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    handler = {"run": _run, "report": _report, "tasks": _tasks, "models": _models}[args.command]
    try:
        handler(args)
    except MRBError as exc:
        print(f"mrb: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mrb: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
