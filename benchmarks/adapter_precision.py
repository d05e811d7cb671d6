"""Precision of the Qwen-VL yes/no adapter: scores on a device against the CPU's in fp32, one pair alone
against the same pair inside a padded batch, and the batch's shared-prefix scores against its unshared
ones (`prefix_sharing=False, vision_cache_mb=0`), in fp32 and bf16.

The tiny random Qwen2.5-VL checkpoint of the adapter tests (`tests/tiny_models.py`, real Qwen
tokenizer) over the first pairs of the mini suite's MiniPhotoQA-IT2T (image+text queries, text
documents of different lengths, so the batch is padded).

    python -m benchmarks.adapter_precision [--device cuda] [--pairs 32]    (from the repository root)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import transformers

from mrb.data import Pair, read_pack
from mrb.rerankers.qwen_vl import QwenVLYesNo
from mrb.tasks import load_tasks

TASK = "MiniPhotoQA-IT2T"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--pairs", type=int, default=32)
    args = parser.parse_args()
    from tests.tiny_models import build_qwen_tokenizer, build_tiny_vl

    [task] = load_tasks(TASK)
    pack = read_pack(task.pack_path())
    c = pack.candidates.head(args.pairs)
    pairs = [Pair(task.instruction, pack.queries[q], pack.documents[d]) for q, d in zip(c["query_id"], c["doc_id"])]
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(build_tiny_vl(Path(tmp) / "tiny-qwen2.5-vl", "qwen2_5_vl", build_qwen_tokenizer(Path(tmp) / "tokenizer")))
        cpu = QwenVLYesNo(folder, device="cpu", dtype="fp32").score(pairs)
        print(
            f"tiny random Qwen2.5-VL on {args.device}, {len(pairs)} pairs of {TASK}; torch {torch.__version__}, "
            f"transformers {transformers.__version__}"
        )
        print(
            f"{'dtype':<6}{'attention':>11}{'max |batch - CPU fp32|':>25}{'max |alone - batch|':>22}"
            f"{'max |shared - unshared|':>26}"
        )
        for dtype in ("fp32", "bf16"):
            reranker = QwenVLYesNo(folder, device=args.device, dtype=dtype)
            batch = reranker.score(pairs)
            alone = [reranker.score([p])[0] for p in pairs]
            unshared = QwenVLYesNo(folder, device=args.device, dtype=dtype, prefix_sharing=False, vision_cache_mb=0).score(pairs)
            vs_cpu = max(abs(b - r) for b, r in zip(batch, cpu))
            vs_alone = max(abs(a - b) for a, b in zip(alone, batch))
            vs_unshared = max(abs(b - u) for b, u in zip(batch, unshared))
            print(f"{dtype:<6}{reranker.attn_implementation:>11}{vs_cpu:>25.1e}{vs_alone:>22.1e}{vs_unshared:>26.1e}")


if __name__ == "__main__":
    main()
