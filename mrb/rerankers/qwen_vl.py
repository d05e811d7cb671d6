"""Yes/no chat rerankers on Qwen2-VL, Qwen2.5-VL and Qwen3-VL: GMR / Lychee-rerank-mm, Qwen3-VL-Reranker
and MonoQwen2-VL.

One adapter renders each pair through the checkpoint's chat template (with the generation prompt) and
scores it by the softmax over two answer tokens at the last position. What differs between the
models is a `YesNoFormat`: the messages built from a pair, the positive / negative tokens, and the
side the prompt shows first.

Two kinds of reuse keep a batch from recomputing what its pairs share. Shared-prefix scoring
(`mrb.rerankers.prefix`): the rows that show the same leading record (a query's candidates) run their
common prefix — system prompt, instruction, the query's image and text — once, and each candidate's
suffix against its key/value cache. Vision-feature reuse (`mrb.rerankers.vision`): each distinct image
of a batch is processed once, and its processed pixels and vision-tower output are kept in bounded
per-task caches, so an image that recurs across batches (a query image whose candidates fill several
batches, a document image of many queries) is processed and goes through the tower once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from mrb.data import Pair, Record
from mrb.errors import MRBError
from mrb.identity import checkpoint_identity
from mrb.rerankers.hf import (
    TransformersReranker,
    check_side,
    left_pad,
    lora_base,
    pixel_bounds,
    project_two_tokens,
    require,
    token_id,
)
from mrb.rerankers.prefix import COUNTERS, Pass, Plan, Row, last_hidden_states, plan_rows
from mrb.rerankers.vision import TensorCache, Tensors, image_digest
from mrb.tasks import Side

if TYPE_CHECKING:
    from mrb.data import Pack
    from mrb.tasks import TaskSpec

Message = dict[str, Any]
MessageBuilder = Callable[[Pair, Image.Image | None, Image.Image | None], list[Message]]

JUDGE_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
MONOQWEN_PROMPT = (
    "Assert the relevance of the previous image document to the following query, answer True or False. The query is: {query}"
)


def _side(prefix: str, record: Record, image: Image.Image | None) -> list[Message]:
    parts: list[Message] = [{"type": "text", "text": prefix}]
    if image is not None:
        parts.append({"type": "image", "image": image})
    if record.text:
        parts.append({"type": "text", "text": record.text})
    return parts


def instruct_query_document(pair: Pair, query_image: Image.Image | None, doc_image: Image.Image | None) -> list[Message]:
    """GMR / Lychee-rerank-mm and Qwen3-VL-Reranker: the judge system sentence, then one user message
    `<Instruct>: {instruction}`, `<Query>:` + image + text, `\\n<Document>:` + image + text."""
    user = [
        {"type": "text", "text": f"<Instruct>: {pair.instruction}"},
        *_side("<Query>:", pair.query, query_image),
        *_side("\n<Document>:", pair.document, doc_image),
    ]
    return [{"role": "system", "content": [{"type": "text", "text": JUDGE_SYSTEM}]}, {"role": "user", "content": user}]


def monoqwen(pair: Pair, query_image: Image.Image | None, doc_image: Image.Image | None) -> list[Message]:
    """MonoQwen2-VL: one user message, the document image then the True/False question about the query."""
    if doc_image is None:
        raise MRBError(f"document {pair.document.id!r} has no image, and MonoQwen2-VL scores image documents only")
    if not pair.query.text:
        raise MRBError(f"query {pair.query.id!r} has no text, and MonoQwen2-VL takes text queries only")
    text = MONOQWEN_PROMPT.format(query=pair.query.text)
    return [{"role": "user", "content": [{"type": "image", "image": doc_image}, {"type": "text", "text": text}]}]


def monoqwen_any_side(pair: Pair, query_image: Image.Image | None, doc_image: Image.Image | None) -> list[Message]:
    """MonoQwen2-VL adapted to every side (`MonoQwenVL(any_side=True)`, what `--fallback` asks of it): the card's
    sentence unchanged; a document's text on its own line where the image goes (after it when both); a query
    image after "The query is: ", before the query's text. A text query on an image document reads as the card's."""
    document: list[Message] = [{"type": "image", "image": doc_image}] if doc_image is not None else []
    if pair.document.text:
        document.append({"type": "text", "text": pair.document.text + "\n"})
    if query_image is None:
        return [{"role": "user", "content": [*document, {"type": "text", "text": MONOQWEN_PROMPT.format(query=pair.query.text)}]}]
    query: list[Message] = [{"type": "text", "text": MONOQWEN_PROMPT.format(query="")}, {"type": "image", "image": query_image}]
    if pair.query.text:
        query.append({"type": "text", "text": pair.query.text})
    return [{"role": "user", "content": [*document, *query]}]


MONOQWEN_ADAPTATION = "MonoQwen2-VL fed any side: document text where its image goes, a query image after 'The query is: '"


@dataclass(frozen=True)
class YesNoFormat:
    """How a yes/no chat reranker sees a pair: its messages, the tokens whose softmax is the score, and the
    side its prompt shows first (rows showing the same record of that side may share a prefix)."""

    name: str
    messages: MessageBuilder
    positive: str
    negative: str
    leading: str = "query"


GMR = YesNoFormat("gmr", instruct_query_document, "yes", "no")
QWEN3_VL = YesNoFormat("qwen3-vl-reranker", instruct_query_document, "yes", "no")
MONOQWEN = YesNoFormat("monoqwen", monoqwen, "True", "False", leading="document")
VISION_CACHE_MB = 512  # default bound on each per-task image cache (tower outputs on the device, pixels on the CPU)


def _images(conversation: list[Message]) -> list[Image.Image]:
    return [part["image"] for msg in conversation for part in msg["content"] if part["type"] == "image"]


@dataclass(frozen=True)
class PreparedPairs:
    """A batch ready for `forward`: each pair's token row (after truncation), the batch's distinct images
    (their cache keys, pixel values and grids, in order of first appearance) and the passes through the
    language model."""

    rows: list[list[int]]
    image_keys: list[str]
    pixel_values: list[torch.Tensor]
    grids: torch.Tensor  # (distinct images, 3): temporal, height and width patches
    plan: Plan


class QwenVLYesNo(TransformersReranker):
    """A Qwen-VL chat checkpoint scored by p(positive) over (positive, negative) at the last position.

    The checkpoint may be a PEFT LoRA adapter: its base model is loaded, the adapter merged, and the
    processor taken from the base. Options left at None use the checkpoint's own processor settings
    (pixel bounds) and do not truncate.

    `prefix_sharing` (default on) runs the common prefix of the rows of one leading record once per
    batch; `vision_cache_mb` bounds each of the per-task caches of vision-tower outputs (on the model's
    device) and processed pixels (on the CPU); 0 turns reuse off: each image is processed once per batch
    and goes through the tower each time it is shown. Neither changes a score beyond float rounding, so neither is part of
    `settings()`. `counters` add up pairs, tokens through the language model, prefix tokens saved, images
    shown, images processed into pixels, and the images and patches through the vision tower.
    """

    name = "qwen-vl-yes-no"
    format: YesNoFormat = GMR

    def __init__(
        self,
        checkpoint: str,
        *,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        prefix_sharing: bool = True,
        vision_cache_mb: int = VISION_CACHE_MB,
        **options: Any,
    ) -> None:
        """`options` are `TransformersReranker`'s (revision, device, dtype, attention, max length, remote code)."""
        if vision_cache_mb < 0:
            raise MRBError(f"vision_cache_mb must be 0 or more, got {vision_cache_mb}")
        self.requested_pixels = (min_pixels, max_pixels)
        self.min_pixels, self.max_pixels = min_pixels, max_pixels  # None: the checkpoint's (known once loaded)
        self.prefix_sharing = prefix_sharing
        self.vision = TensorCache(vision_cache_mb << 20)  # tower outputs, on the model's device
        self.pixels = TensorCache(vision_cache_mb << 20)  # processed pixels and patch grids, on the CPU
        self.counters: dict[str, int] = dict.fromkeys(
            (*COUNTERS, "images", "images_processed", "vision_images", "vision_patches", "vision_cache_hits"), 0
        )
        self._encoder_output: type | None = None  # the class of the tower's output, rebuilt from cached features
        super().__init__(checkpoint, **options)
        self.base_checkpoint = lora_base(self.checkpoint, self.load_revision)  # a LoRA's base model, else None
        self.base_weights: dict[str, Any] | None = None
        if self.base_checkpoint is not None:
            require("peft", "peft")  # before the run, not when its first pair is scored
            self.base_weights = checkpoint_identity(self.base_checkpoint, None)

    def load(self) -> None:
        from transformers import AutoProcessor

        self.model, processor_source, processor_revision = self._load_model()
        self.processor = self.load_processor(AutoProcessor, processor_source, revision=processor_revision)
        # Pixel bounds go to each processor call as `size` (transformers deprecates min/max_pixels kwargs);
        # a bound left at None keeps the checkpoint's own.
        self.min_pixels, self.max_pixels = pixel_bounds(self.processor, self.requested_pixels)
        tokenizer = self.processor.tokenizer
        self.token_ids = (token_id(tokenizer, self.format.positive), token_id(tokenizer, self.format.negative))
        self.pad_id = tokenizer.pad_token_id
        self.end_id = token_id(tokenizer, "<|im_end|>")
        self.protected = {i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special}

    def _load_model(self) -> tuple[Any, str, str | None]:
        """The model, and where its processor lives (the base model's for a LoRA adapter)."""
        from transformers import AutoModelForImageTextToText

        base = self.base_checkpoint
        if base is None:
            return self.load_model(AutoModelForImageTextToText, self.checkpoint), self.checkpoint, self.load_revision
        assert self.base_weights is not None
        peft = require("peft", "peft")
        base_revision = self.base_weights.get("commit")
        model = self.load_model(AutoModelForImageTextToText, base, revision=base_revision)
        model = peft.PeftModel.from_pretrained(model, self.checkpoint, revision=self.load_revision).merge_and_unload()
        return model.eval(), base, base_revision

    def conversations(self, pairs: Sequence[Pair]) -> list[list[Message]]:
        """The chat messages of each pair (its images from `record.image()`: under the runner, its per-task cache)."""

        def image(record: Record, role: str) -> Image.Image | None:
            check_side(record, role)
            return record.image(self.max_pixels, role)

        return [self.format.messages(p, image(p.query, "query"), image(p.document, "document")) for p in pairs]

    def render(self, conversations: list[list[Message]]) -> list[str]:
        """The prompt strings (one image placeholder per image): the chat template with the generation prompt."""
        self.ready()
        return self.processor.apply_chat_template(conversations, tokenize=False, add_generation_prompt=True)

    def start_task(self, task: TaskSpec, pack: Pack) -> None:
        """Images are cached per task: a new task starts with empty caches."""
        self.vision.clear()
        self.pixels.clear()

    def batch_group(self, pair: Pair) -> Hashable | None:
        """What the runner's batch plan keeps together: with prefix sharing, the leading record when it shows an
        image (its prefix, image included, is what the rows share); None leaves the plan to its default."""
        lead = pair.query if self.format.leading == "query" else pair.document
        return (self.format.leading, lead.id) if self.prefix_sharing and lead.has_image else None

    def prepare(self, pairs: Sequence[Pair]) -> PreparedPairs:
        """The batch on the CPU: each distinct image processed once, token rows truncated to max_length,
        every row's multimodal RoPE positions, and the passes (`mrb.rerankers.prefix`)."""
        self.ready()
        conversations = self.conversations(pairs)
        texts = self.render(conversations)
        digests: dict[int, str] = {}  # id of a decoded image (alive while `conversations` is) → digest
        distinct: dict[str, int] = {}
        images: list[Image.Image] = []
        shown: list[list[int]] = []  # per pair, its images as indices into `images`, in prompt order
        for conversation in conversations:
            shown.append([])
            for image in _images(conversation):
                digest = digests.get(id(image)) or digests.setdefault(id(image), image_digest(image))
                if digest not in distinct:
                    distinct[digest] = len(images)
                    images.append(image)
                shown[-1].append(distinct[digest])
        keys = [f"{digest}:{self.min_pixels}:{self.max_pixels}" for digest in distinct]
        processed, _ = self.pixels.get(keys, lambda at: self._process([images[j] for j in at]))
        pixel_values = [pixels for pixels, _ in processed]
        grids = torch.stack([grid for _, (grid,) in processed]) if processed else torch.zeros((0, 3), dtype=torch.long)
        rows = self._tokenize(texts, grids, shown)
        if self.max_length is not None:
            for i, pair in enumerate(pairs):
                keep = self._kept_positions(rows[i], pair)
                if keep is not None:
                    rows[i] = [rows[i][j] for j in keep]
        plan = plan_rows(self._rows(pairs, rows, shown, grids, keys), self.pad_id, self.prefix_sharing)
        return PreparedPairs(rows, keys, pixel_values, grids, plan)

    def _process(self, images: list[Image.Image]) -> list[Tensors]:
        """Each image's pixel patches and patch grid, from the processor within the pixel bounds."""
        size = {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels}
        processed = self.processor.image_processor(images=images, size=size, return_tensors="pt")
        self.counters["images_processed"] += len(images)
        grids = processed["image_grid_thw"]
        patches = torch.split(processed["pixel_values"], grids.prod(-1).tolist())
        return [(pixels, (grid,)) for pixels, grid in zip(patches, grids)]

    def _tokenize(self, texts: list[str], grids: torch.Tensor, shown: list[list[int]]) -> list[list[int]]:
        """Token ids of the prompts, each image placeholder expanded to its image's tokens as the processor does."""
        token = self.processor.image_token
        expanded = []
        for text, images in zip(texts, shown):
            head, *parts = text.split(token)
            replacements = [self.processor.replace_image_token({"image_grid_thw": grids}, image_idx=i) for i in images]
            expanded.append(head + "".join(r + part for r, part in zip(replacements, parts, strict=True)))
        return self.processor.tokenizer(expanded)["input_ids"]

    def _rows(
        self, pairs: Sequence[Pair], rows: list[list[int]], shown: list[list[int]], grids: torch.Tensor, keys: list[str]
    ) -> list[Row]:
        """Each pair's row for `plan_rows`: positions from the model's own multimodal RoPE over the whole
        row, image tokens keyed by their image, grouped by the format's leading record."""
        image_id = self.processor.image_token_id
        ids, mask = left_pad(rows, self.pad_id), left_pad([[1] * len(r) for r in rows], 0)
        types = (ids == image_id).long()  # the processor's mm_token_type_ids: 1 on image tokens (no videos here)
        order = [i for images in shown for i in images]
        positions, _ = self.model.base_model.get_rope_index(
            ids, types, image_grid_thw=grids[order] if order else None, attention_mask=mask
        )
        merge = self.processor.image_processor.merge_size**2
        out = []
        for i, (pair, row, images) in enumerate(zip(pairs, rows, shown)):
            where = [j for j, t in enumerate(row) if t == image_id]
            row_keys: list[Any] = list(row)
            spans = []
            for image in images:
                n = int(grids[image].prod()) // merge
                tokens, where = where[:n], where[n:]
                spans.append((tokens[0], tokens[-1] + 1, image))
                for j in tokens:
                    row_keys[j] = (image_id, keys[image])
            lead = pair.query if self.format.leading == "query" else pair.document
            out.append(Row(row, positions[:, i, ids.shape[1] - len(row) :], lead.id, row_keys, tuple(spans)))
        return out

    def _kept_positions(self, ids: list[int], pair: Pair) -> list[int] | None:
        """Positions kept so a row fits max_length, or None when it fits already.

        As in the Qwen3-VL-Reranker reference: ordinary tokens are dropped from the end of the content,
        before the closing `<|im_end|>` and the generation prompt; special tokens (image placeholders,
        chat markers) are never dropped, so the image features still line up.
        """
        assert self.max_length is not None
        excess = len(ids) - self.max_length
        if excess <= 0:
            return None
        tail = len(ids) - 1 - ids[::-1].index(self.end_id)
        dropped: set[int] = set()
        for j in range(tail - 1, -1, -1):
            if len(dropped) == excess:
                break
            if ids[j] not in self.protected:
                dropped.add(j)
        if len(dropped) < excess:
            raise MRBError(
                f"query {pair.query.id!r} with document {pair.document.id!r} needs {len(ids)} tokens even without "
                f"its text, more than max_length {self.max_length}: raise max_length or lower max_pixels"
            )
        return [j for j in range(len(ids)) if j not in dropped]

    @torch.inference_mode()
    def forward(self, prepared: PreparedPairs) -> list[float]:
        plan = prepared.plan
        shown = plan.suffix.images + (plan.prefix.images if plan.prefix is not None else [])
        try:
            features, hits = self.vision.get(
                [prepared.image_keys[i] for i in shown], lambda at: self._tower(prepared, [shown[j] for j in at])
            )
            split = len(plan.suffix.images)

            def encoder_outputs(p: Pass) -> dict[str, Any]:
                return self._encoder_outputs(features[:split] if p is plan.suffix else features[split:])

            hidden = last_hidden_states(self.model.base_model, plan, encoder_outputs)
        except torch.OutOfMemoryError:
            self.vision.clear()  # cached tower outputs hold accelerator memory the smaller retry may need
            raise
        scores = project_two_tokens(self.model, hidden, self.token_ids)
        plan.count(self.counters, len(scores))
        self.counters["images"] += sum(len(p.images) for p in (plan.suffix, plan.prefix) if p is not None)
        self.counters["vision_cache_hits"] += hits
        return scores

    def _tower(self, prepared: PreparedPairs, images: list[int]) -> list[Tensors]:
        """The vision tower's output for each of `images` (indices of the batch's distinct images)."""
        grids = prepared.grids[images]
        pixels = torch.cat([prepared.pixel_values[i] for i in images])
        out = self.model.get_image_features(pixels.to(self.model.device), grids.to(self.model.device))
        self._encoder_output = type(out)
        deepstack = getattr(out, "deepstack_features", None) or []
        self.counters["vision_images"] += len(images)
        self.counters["vision_patches"] += int(grids.prod(-1).sum())
        return [(merged, tuple(layer[k] for layer in deepstack)) for k, merged in enumerate(out.pooler_output)]

    def _encoder_outputs(self, features: list[Tensors]) -> dict[str, Any]:
        """The model's `mm_encoder_outputs` for a pass showing images with these features (nothing without images)."""
        if not features:
            return {}
        assert self._encoder_output is not None
        fields: dict[str, Any] = {"pooler_output": tuple(merged for merged, _ in features)}
        if features[0][1]:
            fields["deepstack_features"] = [tuple(f[1][layer] for f in features) for layer in range(len(features[0][1]))]
        return {"mm_encoder_outputs": {"image": self._encoder_output(**fields)}}

    def settings(self) -> dict[str, Any]:
        out = {
            **super().settings(),
            "format": self.format.name,
            "tokens": [self.format.positive, self.format.negative],
            "min_pixels": self.requested_pixels[0],  # None: the checkpoint's processor's (part of its weights digest)
            "max_pixels": self.requested_pixels[1],
        }
        if self.base_checkpoint is not None:
            out["base_checkpoint"] = self.base_checkpoint
            out["base_weights"] = self.base_weights
        return out


class Qwen3VLReranker(QwenVLYesNo):
    """Qwen3-VL-Reranker: GMR's layout on a Qwen3-VL backbone."""

    name = "qwen3-vl-reranker"
    format = QWEN3_VL


class MonoQwenVL(QwenVLYesNo):
    """MonoQwen2-VL: a LoRA on Qwen2-VL-2B-Instruct scoring text queries against image documents by True/False.

    `any_side=True` adapts it to every side (`monoqwen_any_side`): what `--fallback` asks of it, marked
    as adapted in the results, since its card documents text queries and image documents only.
    """

    name = "monoqwen-vl"
    format = MONOQWEN
    query_sides: frozenset[Side] = frozenset({"t"})
    document_sides: frozenset[Side] = frozenset({"i"})

    def __init__(self, checkpoint: str, *, any_side: bool = False, **options: Any) -> None:
        """`options` are `QwenVLYesNo`'s."""
        if any_side:
            self.format = YesNoFormat("monoqwen-any-side", monoqwen_any_side, "True", "False", leading="document")
            self.query_sides = self.document_sides = frozenset({"t", "i", "it"})
            self.adaptation = MONOQWEN_ADAPTATION
        super().__init__(checkpoint, **options)
