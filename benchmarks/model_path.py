"""Benchmark 9b, the model path: MRB's runner against the one-pair-per-forward reference loop.

The tiny random Qwen2.5-VL checkpoint of the adapter tests (`tests/tiny_models.py`, real Qwen
tokenizer) scored by the Qwen-VL yes/no adapter on CPU, over the mini suite's I→T and T→I tasks.
Prints pairs/s of both, the speed-up, and the largest score difference.

    python -m benchmarks.model_path [--batch-size 32] [--max-batch-tokens 8192] [--rounds 3] [--workers 1]    (from the repository root)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

from mrb.data import Pair, read_pack
from mrb.rerankers.base import Reranker
from mrb.runner import RunOptions, run_task
from mrb.tasks import TaskSpec, load_tasks

TASKS = ("MiniPhotos-I2T", "MiniPhotos-T2I")


@dataclass
class Comparison:
    task: str
    pairs: int
    reference_times: list[float]  # seconds, one per round
    mrb_times: list[float]
    max_abs_diff: float
    mrb_split: tuple[float, float] = (0.0, 0.0)  # MRB's preparation and model seconds in its fastest round

    @property
    def ratios(self) -> list[float]:
        """Reference time over MRB time, per round (each round runs both loops back to back)."""
        return [ref / mine for ref, mine in zip(self.reference_times, self.mrb_times)]

    @property
    def speedup(self) -> float:
        return statistics.median(self.ratios)


def compare(task: TaskSpec, reranker: Reranker, options: RunOptions, rounds: int = 1) -> Comparison:
    """Score `task` with the reference loop (one pair per call, candidate order) and with MRB's runner,
    `rounds` times in alternation, so machine load falls on both alike."""
    pack = read_pack(task.pack_path())
    pairs = [
        Pair(task.instruction, pack.queries[q], pack.documents[d])
        for q, d in zip(pack.candidates["query_id"], pack.candidates["doc_id"])
    ]
    reranker.start_task(task, pack)
    reranker.score(pairs[:2])  # warm-up
    times: dict[str, list[float]] = {"reference": [], "mrb": []}
    splits = []
    for _ in range(rounds):
        started = time.perf_counter()
        reference = [reranker.score([p])[0] for p in pairs]
        times["reference"].append(time.perf_counter() - started)
        started = time.perf_counter()
        result = run_task(task, reranker, options=options)
        times["mrb"].append(time.perf_counter() - started)
        splits.append((result.stats.prep_seconds, result.stats.model_seconds))
    assert result.ranking is not None
    ours = dict(zip(zip(result.ranking["query_id"], result.ranking["doc_id"]), result.ranking["score"]))
    diff = max(abs(ours[p.query.id, p.document.id] - r) for p, r in zip(pairs, reference))
    fastest = splits[times["mrb"].index(min(times["mrb"]))]
    return Comparison(task.name, len(pairs), times["reference"], times["mrb"], diff, fastest)


def report(rows: list[Comparison]) -> None:
    rounds = len(rows[0].ratios)
    print(
        f"{'task':<16}{'pairs':>6}{'reference pairs/s':>19}{'MRB pairs/s':>13}{'speed-up':>10}{'max |Δscore|':>14}"
        + ("   rounds (lowest-highest)" if rounds > 1 else "")
    )
    for r in rows:
        line = (
            f"{r.task:<16}{r.pairs:>6}{r.pairs / min(r.reference_times):>19,.1f}{r.pairs / min(r.mrb_times):>13,.1f}"
            f"{r.speedup:>9.1f}x{r.max_abs_diff:>14.1e}"
        )
        if rounds > 1:
            line += f"   {min(r.ratios):.1f}-{max(r.ratios):.1f}x"
        print(line)
    n = sum(r.pairs for r in rows)
    both = Comparison(
        "all",
        n,
        [sum(t) for t in zip(*(r.reference_times for r in rows))],
        [sum(t) for t in zip(*(r.mrb_times for r in rows))],
        max(r.max_abs_diff for r in rows),
    )
    print(
        f"{'all':<16}{n:>6}{n / min(both.reference_times):>19,.1f}{n / min(both.mrb_times):>13,.1f}{both.speedup:>9.1f}x"
        f"{both.max_abs_diff:>14.1e}" + (f"   {min(both.ratios):.1f}-{max(both.ratios):.1f}x" if rounds > 1 else "")
    )
    if rounds > 1:
        print(f"pairs/s: the fastest of {rounds} rounds; speed-up: the median of the rounds, each timing both loops back to back")
    print(
        "MRB's time, fastest round: "
        + "; ".join(
            f"{r.task} preparation {r.mrb_split[0]:.2f} s, model {r.mrb_split[1]:.2f} s of {min(r.mrb_times):.2f} s" for r in rows
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-batch-tokens", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the reference loop and MRB")
    parser.add_argument("--workers", type=int, default=1, help="MRB's --workers: threads preparing batches ahead (0: inline)")
    args = parser.parse_args()
    from mrb.rerankers.qwen_vl import QwenVLYesNo
    from tests.tiny_models import build_qwen_tokenizer, build_tiny_vl

    tasks = {t.name: t for t in load_tasks("mini")}
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_vl(Path(tmp) / "tiny-qwen2.5-vl", "qwen2_5_vl", build_qwen_tokenizer(Path(tmp) / "tokenizer"))
        reranker = QwenVLYesNo(str(folder), device="cpu", dtype="fp32")
        options = RunOptions(batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens, workers=args.workers)
        rows = [compare(tasks[name], reranker, options, rounds=args.rounds) for name in TASKS]
    print(
        f"tiny random Qwen2.5-VL (qwen-vl-yes-no adapter), CPU fp32, batch size {args.batch_size}, "
        f"max batch tokens {args.max_batch_tokens}, workers {args.workers}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    report(rows)


if __name__ == "__main__":
    main()
