"""Benchmark 9c, the model path on a GPU, on a workload shaped like MRB's tasks (issue 15, item 3).

A Qwen2.5-VL-7B-shaped model with random bf16 weights (the released config; nothing is downloaded),
the real Qwen tokenizer and the Qwen2.5-VL image processor, through GMR's adapter settings (pixels
4·28·28 … 1280·28·28, max length 3200). One synthetic pack per task type with the real tasks' shapes:
photos of 640×480 (MSCOCO, VisualNews, OVEN), document pages of 1700×2200 that the processor caps at
its `max_pixels` (ViDoRe), product photos of 512×512 (FashionIQ), BEIR-length passages (~120 words),
M-BEIR captions (~15 words) and Wikipedia paragraphs (~90 words). Per task type it prints pairs/s,
language-model tokens/s, model FLOPs utilisation (2 × parameters × LM tokens/s over the GPU's bf16
peak), peak GPU memory, the ratio to the batched runner without prefix sharing or vision reuse and to
the one-pair-per-forward loop, the largest score difference, and the estimated GPU-hours of the full
40-task run from the declared task sizes (queries × depth pairs at each type's measured pairs/s).

    python -m benchmarks.gpu_model_path [--queries 4] [--candidates 50] [--loop-pairs 24]   (a GPU; not yet run on one)
    python -m benchmarks.gpu_model_path --tiny      (the tiny random checkpoint on the CPU: a check that the script runs)
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import transformers
from PIL import Image, ImageDraw

from mrb.data import Pair, Record, read_pack, write_pack
from mrb.rerankers.qwen_vl import QwenVLYesNo
from mrb.runner import RunOptions, run_task
from mrb.tasks import TaskSpec, TaskType, load_tasks

# Qwen/Qwen2.5-VL-7B-Instruct's config.json, as released.
TEXT_7B: dict[str, Any] = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0},
}
VISION_7B: dict[str, Any] = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 3584,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
}
GMR_PIXELS = {"min_pixels": 4 * 28 * 28, "max_pixels": 1280 * 28 * 28}
GMR_MAX_LENGTH = 3200
# Dense bf16 peak of the GPUs this benchmark is meant for (NVIDIA's data sheets), TFLOP/s.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1}
WORDS = [
    "the",
    "of",
    "and",
    "a",
    "to",
    "in",
    "is",
    "was",
    "for",
    "on",
    "that",
    "with",
    "as",
    "by",
    "at",
    "from",
    "his",
    "an",
    "it",
    "are",
    "which",
    "this",
    "be",
    "or",
    "has",
    "had",
    "one",
    "new",
]

# What each side of each type looks like: text words (a range) and an image kind.
SHAPES: dict[str, dict[str, tuple[str | None, tuple[int, int] | None]]] = {
    "t2t": {"q": (None, (6, 14)), "d": (None, (90, 150))},  # BEIR queries and passages
    "i2i": {"q": ("photo", None), "d": ("photo", None)},  # NIGHTS
    "t2i": {"q": (None, (8, 20)), "d": ("photo", None)},  # M-BEIR captions → photos
    "t2vd": {"q": (None, (8, 18)), "d": ("page", None)},  # ViDoRe questions → pages
    "i2t": {"q": ("photo", None), "d": (None, (10, 20))},  # photos → captions
    "t2it": {"q": (None, (8, 16)), "d": ("photo", (10, 30))},  # WebQA, EDIS
    "it2t": {"q": ("photo", (8, 16)), "d": (None, (70, 110))},  # OVEN, InfoSeek: Wikipedia paragraphs
    "it2i": {"q": ("product", (6, 12)), "d": ("product", None)},  # FashionIQ, CIRR
    "it2it": {"q": ("photo", (8, 16)), "d": ("photo", (20, 40))},  # OVEN, InfoSeek, E-VQA
}
IMAGE_SIZES = {"photo": (640, 480), "page": (1700, 2200), "product": (512, 512)}


def image(kind: str, rng: np.random.Generator) -> bytes:
    """A JPEG of the kind's size: smooth colour fields for photos, a white page with dark text-like lines."""
    width, height = IMAGE_SIZES[kind]
    if kind == "page":
        img = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(img)
        for y in range(120, height - 120, 42):
            draw.rectangle((140, y, int(140 + rng.uniform(0.5, 1.0) * (width - 280)), y + 18), fill=(30, 30, 30))
    else:
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def record(rid: str, shape: tuple[str | None, tuple[int, int] | None], rng: np.random.Generator) -> Record:
    kind, words = shape
    text = " ".join(rng.choice(WORDS, int(rng.integers(*words)))) if words else None
    return Record(rid, text, image(kind, rng) if kind else None)


def build_workload(root: Path, queries: int, candidates: int) -> list[TaskSpec]:
    """One task per type in `root`: `queries` queries, each with its own `candidates` documents."""
    rng = np.random.default_rng(0)
    for code, shape in SHAPES.items():
        name = f"GPU-{code.upper()}"
        qs = [record(f"q{i}", shape["q"], rng) for i in range(queries)]
        docs = [record(f"d{i}", shape["d"], rng) for i in range(queries * candidates)]
        rows = [
            (q.id, f"d{i * candidates + r}", r + 1, 1.0 - r / candidates) for i, q in enumerate(qs) for r in range(candidates)
        ]
        write_pack(
            root / "packs" / name,
            queries=qs,
            documents=docs,
            candidates=pd.DataFrame(rows, columns=["query_id", "doc_id", "rank", "score"]),
            qrels=pd.DataFrame(
                [(q.id, f"d{i * candidates}", 1) for i, q in enumerate(qs)], columns=["query_id", "doc_id", "relevance"]
            ),
            manifest={"task": name, "depth": candidates},
        )
        (root / f"{name}.yaml").write_text(
            f"name: {name}\ntype: {code}\ninstruction: Find the document that answers the query.\ndepth: {candidates}\npack: packs/{name}\n"
        )
    order = [t.value for t in TaskType]
    return sorted(load_tasks("GPU-*", task_dirs=[root]), key=lambda t: order.index(t.type.value))


def random_7b(processor_folder: Path, device: str, **options: Any) -> QwenVLYesNo:
    """GMR's adapter whose model is the Qwen2.5-VL-7B shape initialised at random on `device`."""
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLConfig

    class RandomQwen25VL7B(QwenVLYesNo):
        def _load_model(self) -> tuple[Any, str, str | None]:
            config = Qwen2_5_VLConfig(text_config=TEXT_7B, vision_config=VISION_7B, tie_word_embeddings=False)
            config._attn_implementation = self.attn_implementation
            torch.manual_seed(0)
            with torch.device(self.device):
                model = AutoModelForImageTextToText.from_config(config, dtype=self.dtype)
            return model.eval(), self.checkpoint, None

    return RandomQwen25VL7B(str(processor_folder), device=device, dtype="bf16", attn_implementation="sdpa", **options)


def peak_gib() -> float | None:
    """Wait for the GPU; its peak allocated memory since the last call, in GiB (then reset); None on CPU."""
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return peak


@dataclass
class Measure:
    pairs: int
    seconds: float
    lm_tokens: int
    peak: float | None
    scores: dict[tuple[str, str], float]

    @property
    def rate(self) -> float:
        return self.pairs / self.seconds


def run_mode(task: TaskSpec, reranker: QwenVLYesNo, options: RunOptions) -> Measure:
    before = reranker.counters["lm_tokens"]
    peak_gib()
    started = time.perf_counter()
    result = run_task(task, reranker, options=options)
    peak = peak_gib()
    seconds = time.perf_counter() - started
    assert result is not None and result.ranking is not None
    scores = dict(zip(zip(result.ranking["query_id"], result.ranking["doc_id"]), result.ranking["score"]))
    return Measure(len(scores), seconds, reranker.counters["lm_tokens"] - before, peak, scores)


def one_pair_loop(task: TaskSpec, reranker: QwenVLYesNo, pairs: int) -> Measure:
    """The first `pairs` candidates scored one per forward, in candidate order (no runner, no sharing)."""
    pack = read_pack(task.pack_path())
    chosen = list(zip(pack.candidates["query_id"], pack.candidates["doc_id"]))[:pairs]
    reranker.start_task(task, pack)
    before = reranker.counters["lm_tokens"]
    peak_gib()
    started = time.perf_counter()
    scores = {(q, d): reranker.score([Pair(task.instruction, pack.queries[q], pack.documents[d])])[0] for q, d in chosen}
    peak = peak_gib()
    return Measure(len(scores), time.perf_counter() - started, reranker.counters["lm_tokens"] - before, peak, scores)


def gpu_hours(rates: dict[str, float]) -> tuple[float, int]:
    """The full 40-task run at each type's measured pairs/s: GPU-hours and pairs (declared queries × depth)."""
    hours, pairs = 0.0, 0
    for task in load_tasks("all"):
        assert task.sizes is not None, task.name
        n = task.sizes.queries * task.depth
        hours += n / rates[task.type.value] / 3600
        pairs += n
    return hours, pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=4, help="queries per task type")
    parser.add_argument("--candidates", type=int, default=50, help="candidates per query (each query its own documents)")
    parser.add_argument("--loop-pairs", type=int, default=24, help="pairs of each type the one-pair loop scores")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-batch-tokens", type=int, default=32768)
    parser.add_argument("--tiny", action="store_true", help="the tiny random checkpoint on the CPU, to check the script")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak (default: from its name)")
    args = parser.parse_args(argv)
    from tests.tiny_models import PIXELS, build_qwen_tokenizer, build_tiny_vl

    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU, or with --tiny to check the script on the CPU")
    with tempfile.TemporaryDirectory() as tmp:
        tasks = build_workload(Path(tmp) / "workload", args.queries, args.candidates)
        folder = build_tiny_vl(Path(tmp) / "processor", "qwen2_5_vl", build_qwen_tokenizer(Path(tmp) / "tokenizer"))
        started = time.perf_counter()
        if args.tiny:
            shared = QwenVLYesNo(str(folder), device="cpu", dtype="fp32", **PIXELS)
        else:
            shared = random_7b(folder, "cuda", max_length=GMR_MAX_LENGTH, **GMR_PIXELS)
        shared.ready()
        built = time.perf_counter() - started
        params = sum(p.numel() for p in shared.model.parameters())
        unshared = _variant(shared, prefix_sharing=False, vision_cache_mb=0)
        options = RunOptions(batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens)
        rows = []
        for task in tasks:
            run_mode(task, shared, RunOptions(batch_size=2))  # warm-up (kernels, allocator)
            mine, batched = run_mode(task, shared, options), run_mode(task, unshared, options)
            loop = one_pair_loop(task, unshared, args.loop_pairs)
            diff = max(abs(mine.scores[k] - batched.scores[k]) for k in mine.scores)
            rows.append((task, mine, batched, loop, diff))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.tiny else "CPU"
    peak_tflops = args.peak_tflops or next((v for k, v in BF16_PEAK_TFLOPS.items() if k in device), None)
    print(
        f"{device}: {'tiny random Qwen2.5-VL, fp32' if args.tiny else 'random Qwen2.5-VL-7B shape, bf16, sdpa'} "
        f"({params / 1e9:.2f} B parameters, built in {built:.0f} s); {args.queries} queries × {args.candidates} candidates "
        f"per type; batch size {args.batch_size}, max batch tokens {args.max_batch_tokens}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    print(
        f"{'type':<7}{'pairs/s':>9}{'LM tok/s':>11}{'MFU':>7}{'peak GiB':>10}{'vs batched':>12}{'vs 1-pair':>11}"
        f"{'batched pairs/s':>17}{'1-pair pairs/s':>16}{'max |Δscore|':>14}"
    )
    rates = {}
    for task, mine, batched, loop, diff in rows:
        rates[task.type.value] = mine.rate
        tokens = mine.lm_tokens / mine.seconds
        mfu = f"{100 * 2 * params * tokens / (peak_tflops * 1e12):.1f}%" if peak_tflops else "—"
        peak = f"{mine.peak:.1f}" if mine.peak is not None else "—"
        print(
            f"{TaskType(task.type).label:<7}{mine.rate:>9,.1f}{tokens:>11,.0f}{mfu:>7}{peak:>10}{mine.rate / batched.rate:>11.2f}x"
            f"{mine.rate / loop.rate:>10.2f}x{batched.rate:>17,.1f}{loop.rate:>16,.1f}{diff:>14.1e}"
        )
    hours, pairs = gpu_hours(rates)
    print(
        f"the full 40-task run (declared queries × depth 100: {pairs:,} pairs) at these rates: {hours:,.1f} GPU-hours"
        + ("" if peak_tflops else "; MFU needs --peak-tflops for this device")
    )


def _variant(reranker: QwenVLYesNo, **options: Any) -> QwenVLYesNo:
    """The same loaded model with other sharing options and fresh counters and caches."""
    import copy

    from mrb.rerankers.vision import TensorCache

    other = copy.copy(reranker)
    other.prefix_sharing = options["prefix_sharing"]
    other.counters = dict.fromkeys(reranker.counters, 0)
    other.vision, other.pixels = TensorCache(options["vision_cache_mb"] << 20), TensorCache(options["vision_cache_mb"] << 20)
    return other


if __name__ == "__main__":
    main()
