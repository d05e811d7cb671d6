"""Yes/no chat rerankers on Qwen2-VL, Qwen2.5-VL and Qwen3-VL: GMR / Lychee-rerank-mm, Qwen3-VL-Reranker
and MonoQwen2-VL.

One adapter renders each pair through the checkpoint's chat template (with the generation prompt) and
scores it by the softmax over two answer tokens at the last position. What differs between the
models is a `YesNoFormat`: the messages built from a pair and the positive / negative tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from mrb.data import Pair, Record
from mrb.errors import MRBError
from mrb.rerankers.hf import (
    TransformersReranker,
    check_side,
    left_pad,
    require,
    token_id,
    two_token_scores,
)
from mrb.tasks import Side

Message = dict[str, Any]
MessageBuilder = Callable[[Pair, Image.Image | None, Image.Image | None], list[Message]]

JUDGE_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
MONOQWEN_PROMPT = (
    "Assert the relevance of the previous image document to the following query, answer True or False. "
    "The query is: {query}"
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


@dataclass(frozen=True)
class YesNoFormat:
    """How a yes/no chat reranker sees a pair: its messages, and the tokens whose softmax is the score."""

    name: str
    messages: MessageBuilder
    positive: str
    negative: str


GMR = YesNoFormat("gmr", instruct_query_document, "yes", "no")
QWEN3_VL = YesNoFormat("qwen3-vl-reranker", instruct_query_document, "yes", "no")
MONOQWEN = YesNoFormat("monoqwen", monoqwen, "True", "False")


def _images(conversation: list[Message]) -> list[Image.Image]:
    return [part["image"] for msg in conversation for part in msg["content"] if part["type"] == "image"]


class QwenVLYesNo(TransformersReranker):
    """A Qwen-VL chat checkpoint scored by p(positive) over (positive, negative) at the last position.

    The checkpoint may be a PEFT LoRA adapter: its base model is loaded, the adapter merged, and the
    processor taken from the base. Options left at None use the checkpoint's own processor settings
    (pixel bounds) and do not truncate.
    """

    name = "qwen-vl-yes-no"
    format: YesNoFormat = GMR

    def __init__(
        self, checkpoint: str, *, min_pixels: int | None = None, max_pixels: int | None = None, **options: Any
    ) -> None:
        """`options` are `TransformersReranker`'s (revision, device, dtype, attention, max length, remote code)."""
        self.requested_pixels = (min_pixels, max_pixels)
        self.base_checkpoint: str | None = None
        super().__init__(checkpoint, **options)

    def load(self) -> None:
        from transformers import AutoProcessor

        self.model, processor_source, processor_revision = self._load_model()
        self.processor = self.load_processor(AutoProcessor, processor_source, revision=processor_revision)
        # Pixel bounds go to each processor call as `size` (transformers deprecates min/max_pixels kwargs);
        # a bound left at None keeps the checkpoint's own.
        size = self.processor.image_processor.size
        min_pixels, max_pixels = self.requested_pixels
        self.min_pixels = min_pixels if min_pixels is not None else size["shortest_edge"]
        self.max_pixels = max_pixels if max_pixels is not None else size["longest_edge"]
        if not 0 < self.min_pixels <= self.max_pixels:
            raise MRBError(f"pixel bounds must satisfy 0 < min_pixels <= max_pixels, got {self.min_pixels} and {self.max_pixels}")
        tokenizer = self.processor.tokenizer
        self.token_ids = (token_id(tokenizer, self.format.positive), token_id(tokenizer, self.format.negative))
        self.pad_id = tokenizer.pad_token_id
        self.end_id = token_id(tokenizer, "<|im_end|>")
        self.protected = {i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special}

    def _load_model(self) -> tuple[Any, str, str | None]:
        """The model, and where its processor lives (the base model's for a LoRA adapter)."""
        from transformers import AutoModelForImageTextToText
        from transformers.utils import find_adapter_config_file

        if find_adapter_config_file(self.checkpoint, revision=self.revision) is None:
            return self.load_model(AutoModelForImageTextToText, self.checkpoint), self.checkpoint, self.revision
        peft = require("peft", "peft")
        base = peft.PeftConfig.from_pretrained(self.checkpoint, revision=self.revision).base_model_name_or_path
        self.base_checkpoint = base
        model = self.load_model(AutoModelForImageTextToText, base, revision=None)
        model = peft.PeftModel.from_pretrained(model, self.checkpoint, revision=self.revision).merge_and_unload()
        return model.eval(), base, None

    def conversations(self, pairs: Sequence[Pair]) -> list[list[Message]]:
        """The chat messages of each pair (its images from `record.image()`: under the runner, its per-task cache)."""

        def image(record: Record, role: str) -> Image.Image | None:
            check_side(record, role)
            return record.image(self.max_pixels, role)

        return [self.format.messages(p, image(p.query, "query"), image(p.document, "document")) for p in pairs]

    def render(self, conversations: list[list[Message]]) -> list[str]:
        """The prompt strings (one image placeholder per image): the chat template with the generation prompt."""
        return self.processor.apply_chat_template(conversations, tokenize=False, add_generation_prompt=True)

    def prepare(self, pairs: Sequence[Pair]) -> dict[str, Any]:
        """Model inputs on the CPU: processed images, and token rows truncated to max_length and left-padded."""
        conversations = self.conversations(pairs)
        texts = self.render(conversations)
        images = [img for conv in conversations for img in _images(conv)]
        size = {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels}
        enc = self.processor(text=texts, images=images or None, padding=False, size=size)
        rows = {k: v for k, v in enc.items() if isinstance(v, list)}
        if self.max_length is not None:
            for i, pair in enumerate(pairs):
                keep = self._kept_positions(rows["input_ids"][i], pair)
                if keep is not None:
                    for values in rows.values():
                        values[i] = [values[i][j] for j in keep]
        inputs = {k: v for k, v in enc.items() if k not in rows}
        inputs.update({k: left_pad(v, self.pad_id if k == "input_ids" else 0) for k, v in rows.items()})
        return inputs

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

    def forward(self, prepared: dict[str, Any]) -> list[float]:
        return two_token_scores(self.model, prepared, self.token_ids)

    def settings(self) -> dict[str, Any]:
        out = {
            **super().settings(),
            "format": self.format.name,
            "tokens": [self.format.positive, self.format.negative],
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
        }
        if self.base_checkpoint is not None:
            out["base_checkpoint"] = self.base_checkpoint
        return out


class Qwen3VLReranker(QwenVLYesNo):
    """Qwen3-VL-Reranker: GMR's layout on a Qwen3-VL backbone."""

    name = "qwen3-vl-reranker"
    format = QWEN3_VL


class MonoQwenVL(QwenVLYesNo):
    """MonoQwen2-VL: a LoRA on Qwen2-VL-2B-Instruct scoring text queries against image documents by True/False."""

    name = "monoqwen-vl"
    format = MONOQWEN
    query_sides: frozenset[Side] = frozenset({"t"})
    document_sides: frozenset[Side] = frozenset({"i"})
