"""Measure MRB's first stage on the available GPU: GME-Qwen2-VL-2B encoding throughput and exact top-k search.

The encoder is MRB's own `GMEEncoder`, loaded with `from_pretrained` from a checkpoint of the
real GME-Qwen2-VL-2B shape (Qwen2-VL-2B: 28 layers of width 1536, a 32-layer ViT of width
1280) with random weights and the real Qwen tokenizer, so speed, not quality, is measured;
no download is needed. Documents: passages of ~100 words, photos of 512×384 and 1024×1024
pixels; queries: one-line questions with the task instruction.
The search: `TopK` over 4096-document shards (the build's default) for 10,000 queries.

Run from the repository root:  python scripts/bench_first_stage.py [--tiny] [--json OUT]
(``--tiny`` swaps in a 2-layer model to check the script on a CPU.)
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from mrb.candidates.build import embed_prefetched  # noqa: E402
from mrb.candidates.encoders import GMEEncoder  # noqa: E402
from mrb.candidates.search import TopK  # noqa: E402
from mrb.data import Record  # noqa: E402
from tests.tiny_models import build_qwen_tokenizer  # noqa: E402

# Qwen2-VL-2B-Instruct's config.json (GME-Qwen2-VL-2B fine-tunes it without changing the shape).
TEXT_2B = dict(
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    vocab_size=151936,
    rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6},
)
VISION_2B = dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4)
TEXT_TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4},
)
VISION_TINY = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2)
WORDS = [
    "the",
    "of",
    "and",
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
    "it",
    "at",
    "from",
    "his",
    "an",
    "were",
    "are",
    "which",
    "this",
    "be",
    "or",
    "has",
    "had",
    "climate",
    "energy",
    "protein",
    "river",
    "history",
    "market",
    "city",
    "team",
    "season",
    "model",
    "data",
    "method",
    "result",
    "cell",
]


def checkpoint(folder: Path, tiny: bool) -> Path:
    """Save a random-weight Qwen2-VL of the chosen shape with the real Qwen tokenizer and a processor."""
    from transformers import (
        AutoTokenizer,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    config = Qwen2VLConfig(
        text_config=TEXT_TINY if tiny else TEXT_2B, vision_config=VISION_TINY if tiny else VISION_2B, tie_word_embeddings=True
    )
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(build_qwen_tokenizer(folder / "tokenizer"))
    Qwen2VLProcessor(Qwen2VLImageProcessor(), tokenizer, Qwen2VLVideoProcessor()).save_pretrained(folder)
    return folder


def jpeg(width: int, height: int, rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def rate(encoder: GMEEncoder, records: list[Record], instruction: str | None, batch_size: int, prefetch: bool) -> float:
    """Records per second over all `records` (after one warm-up batch): as a build embeds a shard
    (`embed_prefetched`, the next batch prepared on a worker thread), or one batch after another."""
    encoder.embed(records[:batch_size], instruction)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    if prefetch:
        embed_prefetched(encoder, records, instruction, batch_size)
    else:
        for start in range(0, len(records), batch_size):
            encoder.embed(records[start : start + batch_size], instruction)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return len(records) / (time.perf_counter() - started)


def preprocess_rate(encoder: GMEEncoder, records: list[Record], instruction: str | None, batch_size: int) -> float:
    """Records per second through the processor alone (decoding, resizing, tokenising on the CPU)."""
    started = time.perf_counter()
    for start in range(0, len(records), batch_size):
        encoder.prepare(records[start : start + batch_size], instruction)
    return len(records) / (time.perf_counter() - started)


def search_rate(n_queries: int, n_docs: int, dim: int, shard: int) -> float:
    """Documents scanned per second by `TopK` (depth 100) for `n_queries` queries."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=device).manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(n_queries, dim, device=device, generator=gen), dim=-1)
    docs = torch.nn.functional.normalize(torch.randn(shard, dim, device=device, generator=gen), dim=-1)
    top = TopK(queries, 100, device=device)
    top.add(docs, torch.arange(shard))
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for start in range(0, n_docs, shard):
        top.add(docs, torch.arange(start, start + shard) + shard)
    if device == "cuda":
        torch.cuda.synchronize()
    return n_docs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model (checks the script on a CPU)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    scale = 8 if args.tiny else 1
    figures: dict[str, object] = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        encoder = GMEEncoder(str(checkpoint(Path(tmp), args.tiny)), dtype="bf16")
        figures["load_seconds"] = round(time.perf_counter() - started, 1)
        passages = [Record(f"p{i}", " ".join(rng.choice(WORDS, 100))) for i in range(2048 // scale)]
        questions = [Record(f"q{i}", " ".join(rng.choice(WORDS, 12)) + "?") for i in range(2048 // scale)]
        photos = [Record(f"i{i}", None, jpeg(512, 384, rng)) for i in range(256 // scale)]
        pages = [Record(f"v{i}", None, jpeg(1024, 1024, rng)) for i in range(128 // scale)]
        instruction = "Given a web search query, retrieve relevant passages that answer the query"
        for name, records, task_instruction, batch in [
            ("text_passages_per_s", passages, None, 64),
            ("text_queries_per_s", questions, instruction, 256),
            ("images_512x384_per_s", photos, None, 32),
            ("images_1024x1024_per_s", pages, None, 16),
        ]:
            figures[name] = round(rate(encoder, records, task_instruction, batch, prefetch=True), 1)
            figures[name.replace("_per_s", "_sequential_per_s")] = round(
                rate(encoder, records, task_instruction, batch, prefetch=False), 1
            )
            figures[name.replace("_per_s", "_preprocessed_per_s")] = round(
                preprocess_rate(encoder, records, task_instruction, batch), 1
            )
            print(f"{name}: {figures[name]} (batch {batch})", flush=True)
    figures["image_processor"] = type(encoder.processor.image_processor).__name__
    figures["search_docs_per_s_10k_queries"] = round(search_rate(10_000 // scale, 1_048_576 // scale, 1536, 4096))
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
