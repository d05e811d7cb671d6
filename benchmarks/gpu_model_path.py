"""Benchmark 9c, the model path on a GPU: a full-size Qwen2.5-VL-7B-shaped model with random bf16 weights.

The Qwen-VL yes/no adapter with the real Qwen tokenizer and the Qwen2.5-VL image processor, but the
weights of the released 7B shape initialised at random on the GPU (nothing is downloaded). Over the
mini suite's I→T and T→I tasks: pairs/s and peak GPU memory of the one-pair-per-forward reference
loop and of MRB's runner, the speed-up, and the largest score difference (bf16: batched and
single-pair kernels differ, so scores match to bf16 precision, not to 1e-5). Fits a 10-minute run.

    python -m benchmarks.gpu_model_path [--batch-size 64] [--max-batch-tokens 32768]    (from the repository root)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import transformers

from benchmarks.model_path import TASKS, compare, report
from mrb.runner import RunOptions
from mrb.tasks import load_tasks

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


def peak_gib() -> float | None:
    """Wait for the GPU; its peak allocated memory since the last call, in GiB (then reset); None on CPU."""
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return peak


def random_qwen_reranker(processor_folder: Path, device: str, dtype: str) -> Any:
    """The Qwen-VL yes/no adapter whose model is the 7B shape initialised at random on `device`."""
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLConfig

    from mrb.rerankers.qwen_vl import QwenVLYesNo

    class RandomQwen25VL7B(QwenVLYesNo):
        def _load_model(self) -> tuple[Any, str, str | None]:
            config = Qwen2_5_VLConfig(text_config=TEXT_7B, vision_config=VISION_7B, tie_word_embeddings=False)
            config._attn_implementation = self.attn_implementation
            torch.manual_seed(0)
            with torch.device(self.device):
                model = AutoModelForImageTextToText.from_config(config, dtype=self.dtype)
            return model.eval(), self.checkpoint, None

    return RandomQwen25VL7B(str(processor_folder), device=device, dtype=dtype, attn_implementation="sdpa")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-batch-tokens", type=int, default=32768)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU (the CPU one is benchmarks/model_path.py)")
    from tests.tiny_models import build_qwen_tokenizer, build_tiny_vl

    tasks = {t.name: t for t in load_tasks("mini")}
    with tempfile.TemporaryDirectory() as tmp:
        # the tiny checkpoint only supplies the processor files (tokenizer, image processor, chat template)
        folder = build_tiny_vl(Path(tmp) / "processor", "qwen2_5_vl", build_qwen_tokenizer(Path(tmp) / "tokenizer"))
        started = time.perf_counter()
        reranker = random_qwen_reranker(folder, args.device, "bf16")
        params = sum(p.numel() for p in reranker.model.parameters()) / 1e9
        build_seconds = time.perf_counter() - started
        peak_gib()
        options = RunOptions(batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens)
        rows = [compare(tasks[name], reranker, options, sync=peak_gib) for name in TASKS]
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(
        f"{device}: random Qwen2.5-VL-7B shape ({params:.2f} B parameters, built in {build_seconds:.0f} s), "
        f"bf16, sdpa, batch size {args.batch_size}, max batch tokens {args.max_batch_tokens}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    report(rows)


if __name__ == "__main__":
    main()
