"""Benchmark of shared-prefix scoring and vision-feature reuse (issue 15, item 4).

The tiny random Qwen2.5-VL checkpoint of the adapter tests (`tests/tiny_models.py`, real Qwen tokenizer,
the checkpoint's own pixel bounds) scored by the Qwen-VL yes/no adapter on CPU in fp32 under MRB's
runner, over the mini suite's I→T, IT→T and T→I tasks: shared (prefix sharing and the vision cache on,
the defaults) against unshared (`prefix_sharing=False, vision_cache_mb=0`: every pair whole, every image
through the vision tower each time it is shown), in alternating rounds in one process. Prints per task
the pairs/s of both, the speed-up, tokens through the language model and vision patches per pair, the
largest score difference, and where the shared path's time goes.

    python -m benchmarks.prefix_sharing [--batch-size 32] [--max-batch-tokens 8192] [--rounds 3] [--workers 1]    (from the repository root)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers

from mrb.data import Pair, read_pack
from mrb.rerankers.qwen_vl import QwenVLYesNo
from mrb.runner import RunOptions, run_task
from mrb.tasks import TaskSpec, load_tasks

TASKS = ("MiniPhotos-I2T", "MiniPhotoQA-IT2T", "MiniPhotos-T2I")
MODES = ("unshared", "shared")


@dataclass
class Mode:
    """One mode's measurements on one task: seconds per round, counters and scores of the last round."""

    times: list[float] = field(default_factory=list)
    splits: list[tuple[float, float]] = field(default_factory=list)  # preparation and model seconds per round
    counters: dict[str, int] = field(default_factory=dict)
    scores: dict[tuple[str, str], float] = field(default_factory=dict)

    def per_pair(self, key: str) -> float:
        return self.counters[key] / self.counters["pairs"]


def measure(task: TaskSpec, reranker: QwenVLYesNo, options: RunOptions, into: Mode) -> None:
    """One timed run of `task`; the adapter's counters are read as the difference over the run."""
    before = dict(reranker.counters)
    started = time.perf_counter()
    result = run_task(task, reranker, options=options)
    into.times.append(time.perf_counter() - started)
    into.splits.append((result.stats.prep_seconds, result.stats.model_seconds))
    into.counters = {k: v - before[k] for k, v in reranker.counters.items()}
    assert result.ranking is not None
    into.scores = dict(zip(zip(result.ranking["query_id"], result.ranking["doc_id"]), result.ranking["score"]))


def report(results: dict[str, dict[str, Mode]], rounds: int) -> None:
    print(
        f"{'task':<18}{'pairs':>6}{'unshared pairs/s':>18}{'shared pairs/s':>16}{'speed-up':>10}{'rounds':>12}"
        f"{'LM tokens/pair':>18}{'vision patches/pair':>22}{'max |Δscore|':>14}"
    )
    for name, modes in results.items():
        off, on = modes["unshared"], modes["shared"]
        pairs = off.counters["pairs"]
        ratios = [a / b for a, b in zip(off.times, on.times)]
        diff = max(abs(on.scores[k] - off.scores[k]) for k in off.scores)
        tokens = f"{off.per_pair('lm_tokens'):.0f} → {on.per_pair('lm_tokens'):.0f}"
        patches = f"{off.per_pair('vision_patches'):.0f} → {on.per_pair('vision_patches'):.0f}"
        print(
            f"{name:<18}{pairs:>6}{pairs / min(off.times):>18,.1f}{pairs / min(on.times):>16,.1f}"
            f"{statistics.median(ratios):>9.1f}x{f'{min(ratios):.1f}-{max(ratios):.1f}x':>12}{tokens:>18}{patches:>22}{diff:>14.1e}"
        )
    print(
        f"pairs/s: the fastest of {rounds} rounds; speed-up: the median (and range) of the per-round ratios, "
        "each round timing both modes back to back, in alternating order"
    )
    for name, modes in results.items():
        line = []
        for mode in MODES:
            m = modes[mode]
            prep, model = m.splits[m.times.index(min(m.times))]
            line.append(f"{mode} preparation {prep:.2f} s, model {model:.2f} s of {min(m.times):.2f} s")
        on = modes["shared"].counters
        print(
            f"{name}: " + "; ".join(line) + f"; shared: {on['prefix_groups']} shared prefixes, "
            f"{on['vision_images']} of {on['images']} images shown through the tower ({on['vision_cache_hits']} cache hits)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-batch-tokens", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the two modes")
    parser.add_argument("--workers", type=int, default=1, help="MRB's --workers: threads preparing batches ahead (0: inline)")
    args = parser.parse_args()
    from tests.tiny_models import build_qwen_tokenizer, build_tiny_vl

    tasks = {t.name: t for t in load_tasks("mini")}
    options = RunOptions(batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens, workers=args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(build_tiny_vl(Path(tmp) / "tiny-qwen2.5-vl", "qwen2_5_vl", build_qwen_tokenizer(Path(tmp) / "tokenizer")))
        rerankers = {
            "shared": QwenVLYesNo(folder, device="cpu", dtype="fp32"),
            "unshared": QwenVLYesNo(folder, device="cpu", dtype="fp32", prefix_sharing=False, vision_cache_mb=0),
        }
        results = {name: {mode: Mode() for mode in MODES} for name in TASKS}
        warm_up = tasks[TASKS[0]]
        pack = read_pack(warm_up.pack_path())
        first = [
            Pair(warm_up.instruction, pack.queries[q], pack.documents[d])
            for q, d in zip(pack.candidates["query_id"][:2], pack.candidates["doc_id"][:2])
        ]
        for reranker in rerankers.values():
            reranker.score(first)
        for round_ in range(args.rounds):
            for name in TASKS:
                for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
                    measure(tasks[name], rerankers[mode], options, results[name][mode])
    print(
        f"tiny random Qwen2.5-VL (qwen-vl-yes-no adapter), CPU fp32, {torch.get_num_threads()} threads, batch size "
        f"{args.batch_size}, max batch tokens {args.max_batch_tokens}, workers {args.workers}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    report(results, args.rounds)


if __name__ == "__main__":
    main()
