"""What projecting only the last hidden state onto the yes/no rows of the LM head saves.

Builds a randomly initialised Qwen2.5-VL (the GMR architecture; `--size 7b` has GMR-7B's language
model dimensions, the default is a small model for a CPU) and scores a batch of text prompts three ways:

  full         model(**inputs).logits[:, -1]: logits over the whole vocabulary at every position
               (what the reference usage does), then the softmax over (yes, no);
  last-only    model(**inputs, logits_to_keep=1): the whole vocabulary, last position only;
  two-rows     mrb.rerankers.hf.two_token_scores: the last hidden state times the two LM-head rows.

Prints wall time per batch (median of --repeats after a warm-up), peak accelerator memory where there
is one, the bytes of the logits tensor each way materialises, and the largest score difference to `full`.

    python benchmarks/last_token_projection.py                       # CPU, small model
    python benchmarks/last_token_projection.py --size 7b --device cuda --dtype bf16 --batch 16 --length 1024
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import transformers

from benchmarks.gpu_model_path import TEXT_7B
from mrb.rerankers.hf import two_token_scores

YES, NO = 9693, 2152  # the Qwen vocabulary's "yes" and "no"
SIZES = {  # language-model dimensions; the vision tower is kept small (text prompts do not use it)
    "small": {
        "hidden_size": 1024,
        "intermediate_size": 2816,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
    },
    "7b": {
        k: TEXT_7B[k]
        for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
    },
}


def build(size: str, device: str, dtype: torch.dtype):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = {
        **SIZES[size],
        "vocab_size": 152064,
        "rope_parameters": {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6},
    }
    vision = {
        "depth": 1,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 4,
        "out_hidden_size": SIZES[size]["hidden_size"],
    }
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(device):
        return Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype).eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(fn: Callable[[], list[float]], device: str, repeats: int) -> tuple[float, float | None, list[float]]:
    """Median seconds per call, peak accelerator memory (GiB) and the scores."""
    fn()
    times = []
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        scores = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return statistics.median(times), peak, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="fp32")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    model = build(args.size, args.device, dtype)
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "input_ids": torch.randint(0, 150000, (args.batch, args.length), generator=generator).to(args.device),
        "attention_mask": torch.ones(args.batch, args.length, dtype=torch.long, device=args.device),
    }
    vocab = model.config.text_config.vocab_size

    @torch.inference_mode()
    def full() -> list[float]:
        logits = model(**inputs).logits[:, -1, [YES, NO]].double()
        return torch.softmax(logits, -1)[:, 0].tolist()

    @torch.inference_mode()
    def last_only() -> list[float]:
        logits = model(**inputs, logits_to_keep=1).logits[:, -1, [YES, NO]].double()
        return torch.softmax(logits, -1)[:, 0].tolist()

    def two_rows() -> list[float]:
        return two_token_scores(model, inputs, (YES, NO))

    element = torch.finfo(dtype).bits // 8
    logits_bytes = {
        "full": args.batch * args.length * vocab * element,
        "last-only": args.batch * vocab * element,
        "two-rows": args.batch * 2 * element,
    }
    params = sum(p.numel() for p in model.parameters()) / 1e9
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(
        f"Qwen2.5-VL random init, {args.size} ({params:.2f}B parameters), {args.dtype} on {gpu}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}"
    )
    print(f"batch {args.batch} x {args.length} tokens, vocabulary {vocab}, median of {args.repeats}\n")
    print(f"{'method':<10} {'s/batch':>9} {'pairs/s':>9} {'peak GiB':>9} {'logits MiB':>11} {'max |Δ| vs full':>16}")
    reference: list[float] | None = None
    for name, fn in (("full", full), ("last-only", last_only), ("two-rows", two_rows)):
        seconds, peak, scores = measure(fn, args.device, args.repeats)
        reference = reference or scores
        delta = max(abs(a - b) for a, b in zip(scores, reference, strict=True))
        peak_text = f"{peak:9.2f}" if peak is not None else f"{'-':>9}"
        print(
            f"{name:<10} {seconds:9.3f} {args.batch / seconds:9.1f} {peak_text} {logits_bytes[name] / 2**20:11.2f} {delta:16.2e}"
        )


if __name__ == "__main__":
    main()
