"""Listwise chat rerankers: a window of numbered candidates in one prompt, the permutation decoded greedily
and parsed (the runner repairs and counts what is not a permutation), or FIRST-style read from the logits
of the first label the model would write.

A `ListwiseFormat` says what the model sees: the messages built from the query and the window's candidates
(images as image parts), the labels (``[1]`` … or ``[A]`` …) and how an answer is read:

- ``rank-zephyr``: rank_llm's single-turn RankGPT prompt, on which RankZephyr and FIRST were trained
  (system ``You are RankLLM, …``; ``I will provide you with {num} passages, …``; ``[i] {passage}`` lines;
  the closing instruction). As rank_llm cleans them, a passage is repaired by ftfy, has its whitespace
  collapsed and is cut to `max_passage_words` words, query and passages have ``[n]`` written ``(n)``, and
  a text model's rendered prompt goes through ftfy again. On a Qwen-VL model an image is an image part: a
  query's where the prompt first names the query (the closing ``Search Query:`` line repeats its text only,
  and is left out without text), a candidate's after its label.
- ``rank-zephyr-alpha``: the same with letters (``[A]`` …), as FIRST reads them.
- ``lighton``: LightOn-rerank-LW's prompt as MTEB's wrapper builds it: a text query, candidates ``[i]: …``
  that are a passage or a page image; a window of passages is rendered as a fixed string, a window with an
  image through the chat template; only an answer holding the full permutation ``[a] > [b] > …`` counts
  (anything else keeps the window's order).

Answers are parsed as rank_llm does (after a ``</think>``, every number, or every capital letter, is a
label; 1-based) or, for ``lighton``, strictly. Decoding is greedy; `max_new_tokens` None generates exactly
as many tokens as the full permutation takes (rank_llm's min = max tokens).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from mrb.data import Record
from mrb.errors import MRBError
from mrb.rerankers.base import ALL_SIDES, TEXT_ONLY, ListwiseReranker, Window, check_window
from mrb.rerankers.hf import TransformersReranker, check_side, pixel_bounds, side_text, token_id
from mrb.tasks import Side

Message = dict[str, Any]
Part = dict[str, Any]
Candidate = tuple[str, Image.Image | None]  # a candidate's (cleaned) text and its image
Builder = Callable[[str, Image.Image | None, list[Candidate], list[str]], list[Message]]

RANK_LLM_SYSTEM = "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query"
LIGHTON_TEXT_PROMPT = "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
THINK_BLOCK = "<think>\n\n</think>\n\n"


def _text(text: str) -> Part:
    return {"type": "text", "text": text}


def _image(image: Image.Image | None) -> list[Part]:
    return [] if image is None else [{"type": "image", "image": image}]


def _merged(parts: list[Part]) -> list[Part]:
    """Adjacent text parts as one (the chat templates concatenate them; a text tokenizer needs one string)."""
    out: list[Part] = []
    for part in parts:
        if part["type"] == "text" and out and out[-1]["type"] == "text":
            out[-1] = _text(out[-1]["text"] + part["text"])
        elif part["type"] != "text" or part["text"]:
            out.append(part)
    return out


def rank_zephyr_messages(alpha: bool) -> Builder:
    """rank_llm's `rank_zephyr_template.yaml` (numbers) or `rank_zephyr_alpha_template.yaml` (letters)."""
    kind, example = ("an alphabetical", "[B] > [A]") if alpha else ("a numerical", "[2] > [1]")

    def build(query: str, query_image: Image.Image | None, candidates: list[Candidate], labels: list[str]) -> list[Message]:
        num = len(candidates)
        parts = [
            _text(
                f"I will provide you with {num} passages, each indicated by {kind} identifier []. "
                "Rank the passages based on their relevance to the search query: "
            ),
            *_image(query_image),
            _text(f"{query}.\n"),
        ]
        for label, (text, image) in zip(labels, candidates):
            parts += [_text(f"[{label}] "), *_image(image), _text(f"{text}\n")]
        parts.append(
            _text(
                (f"Search Query: {query}.\n" if query else "")
                + f"Rank the {num} passages above based on their relevance to the search query. All the passages should be "
                "included and listed using identifiers, in descending order of relevance. The output format should be [] > [], "
                f"e.g., {example}, Answer concisely and directly and only respond with the ranking results, do not say any "
                "word or explain."
            )
        )
        return [{"role": "system", "content": [_text(RANK_LLM_SYSTEM)]}, {"role": "user", "content": _merged(parts)}]

    return build


def lighton_messages(
    query: str, query_image: Image.Image | None, candidates: list[Candidate], labels: list[str]
) -> list[Message]:
    """MTEB's LightOn wrapper, a window holding an image: one user message through the chat template."""
    parts = [_text(f"Query: {query}\n\nRank these documents from most to least relevant:\n")]
    for label, (text, image) in zip(labels, candidates):
        parts += [_text(f"[{label}]: "), *_image(image), _text("\n")] if image is not None else [_text(f"[{label}]: {text}\n")]
    parts.append(_text("\nRanking:"))
    return [{"role": "user", "content": _merged(parts)}]


def lighton_text_prompt(query: str, texts: list[str], labels: list[str]) -> str:
    """MTEB's LightOn wrapper, a window of passages: a fixed prompt string (no chat template)."""
    body = "\n".join(f"[{label}]: {text}" for label, text in zip(labels, texts))
    return LIGHTON_TEXT_PROMPT.format(
        user=f"Query: {query}\n\nRank these passages from most to least relevant:\n{body}\n\nRanking:"
    )


@dataclass(frozen=True)
class ListwiseFormat:
    """What a listwise chat model sees and how its answer is read (see the module docstring)."""

    name: str
    messages: Builder
    alpha: bool = False  # labels A, B, … instead of 1, 2, …
    strict: bool = False  # only the full permutation `[a] > [b] > …` counts (else the window keeps its order)
    clean: bool = False  # rank_llm's cleaning of query and passages: [n] → (n), whitespace collapsed, words cut
    text_prompt: Callable[[str, list[str], list[str]], str] | None = (
        None  # a window without images, rendered without the template
    )
    query_sides: frozenset[Side] = ALL_SIDES
    document_sides: frozenset[Side] = ALL_SIDES

    def labels(self, n: int) -> list[str]:
        return [chr(ord("A") + i) for i in range(n)] if self.alpha else [str(i + 1) for i in range(n)]


LISTWISE_FORMATS = {
    f.name: f
    for f in [
        ListwiseFormat("rank-zephyr", rank_zephyr_messages(alpha=False), clean=True),
        ListwiseFormat("rank-zephyr-alpha", rank_zephyr_messages(alpha=True), alpha=True, clean=True),
        ListwiseFormat(
            "lighton",
            lighton_messages,
            strict=True,
            text_prompt=lighton_text_prompt,
            query_sides=TEXT_ONLY,
            document_sides=frozenset({"t", "i"}),
        ),
    ]
}


def no_brackets(text: str) -> str:
    """rank_llm's `_replace_number`: ``[n]`` written ``(n)``, so a text never shows a label."""
    return re.sub(r"\[(\d+)\]", r"(\1)", text)


def fix_text(text: str) -> str:
    """ftfy's `fix_text`, as rank_llm applies it to every passage and to the rendered prompt (mojibake repaired,
    quotes uncurled, ligatures and full-width letters unfolded, NFC)."""
    try:
        import ftfy
    except ImportError as exc:
        raise MRBError("the rank-zephyr formats clean texts as rank_llm does, with ftfy: pip install 'mrb[listwise]'") from exc
    return str(ftfy.fix_text(text))


def clean_passage(text: str, words: int | None) -> str:
    """rank_llm's cleaning of a passage: ftfy's repairs, whitespace collapsed, at most `words` words, ``[n]``
    written ``(n)``."""
    tokens = fix_text(text.strip()).split()
    return no_brackets(" ".join(tokens if words is None else tokens[:words]))


def parse_ranking(answer: str, n: int, alpha: bool = False, strict: bool = False) -> list[int]:
    """The 0-based indices an answer names, in its order (what follows the last ``</think>``).

    rank_llm's reading: every number (or capital letter, with `alpha`) is a label, whatever surrounds it;
    the runner then drops duplicates and unknown labels and appends the missing ones. `strict` (MTEB's
    LightOn reading): only ``[a] > [b] > …`` naming all `n` labels, each once, counts; else nothing."""
    answer = answer.rsplit("</think>", 1)[-1]
    if strict:
        found = re.search(r"\s*>\s*".join([r"\[(\d+)\]"] * n), answer)
        order = [int(x) - 1 for x in found.groups()] if found else []
        return order if sorted(order) == list(range(n)) else []
    if alpha:
        return [ord(c) - ord("A") for c in re.findall(r"[A-Z]", answer)]
    return [int(x) - 1 for x in re.findall(r"\d+", answer)]


class ChatListwise(TransformersReranker, ListwiseReranker):
    """A causal chat LM (text) as a listwise reranker: the format's prompt through the checkpoint's chat
    template, greedy decoding of the permutation, or (`first_token_logits`) the order of the label logits
    at the first label the answer would hold (FIRST: after the opening ``[``, greedily generated).

    `max_length` is the prompt's budget (rank_llm's context size): passages are cut by words, starting at
    `max_passage_words` (or the longest passage), until the prompt plus the answer fits.
    """

    name = "listwise-chat"
    query_sides: frozenset[Side] = TEXT_ONLY
    document_sides: frozenset[Side] = TEXT_ONLY

    def __init__(
        self,
        checkpoint: str,
        *,
        format: str = "rank-zephyr",
        window: int = 20,
        stride: int = 10,
        full_last_window: bool = False,
        first_token_logits: bool = False,
        max_new_tokens: int | None = None,
        max_passage_words: int | None = None,
        think_block: bool = False,
        **options: Any,
    ) -> None:
        """`options` are `TransformersReranker`'s (revision, device, dtype, attention, max length, remote code)."""
        if format not in LISTWISE_FORMATS:
            raise MRBError(f"unknown listwise format {format!r}; use one of {', '.join(LISTWISE_FORMATS)}")
        check_window(window, stride)
        self.format = LISTWISE_FORMATS[format]
        if self.format.alpha and window > 26:
            raise MRBError(f"format {format} labels candidates A … Z: a window holds at most 26, got {window}")
        for option, value in (("max_new_tokens", max_new_tokens), ("max_passage_words", max_passage_words)):
            if value is not None and value < 1:
                raise MRBError(f"{option} must be at least 1, got {value}")
        self.window, self.stride, self.full_last_window = window, stride, full_last_window
        self.first_token_logits, self.max_new_tokens = first_token_logits, max_new_tokens
        self.max_passage_words, self.think_block = max_passage_words, think_block
        if self.format.clean:
            fix_text("")  # ftfy is there before the run starts, not only at its first window
        self.query_sides = self.format.query_sides & type(self).query_sides
        self.document_sides = self.format.document_sides & type(self).document_sides
        super().__init__(checkpoint, **options)

    def load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = self.load_processor(AutoTokenizer)
        self.model = self.load_model(AutoModelForCausalLM, self.checkpoint)
        self._prepare_tokenizer()

    def _prepare_tokenizer(self) -> None:
        """Left padding for batched generation (a tokenizer without a pad token pads with its end token), and the
        label tokens FIRST reads."""
        labels = self.format.labels(self.window) if self.first_token_logits else []
        self.label_ids = [token_id(self.tokenizer, label) for label in labels]
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    # ── prompts ──

    def _texts(self, window: Window, words: int | None) -> tuple[str, list[str]]:
        """The query's and the candidates' texts, cleaned as the format says, each candidate's cut to `words` words."""
        text_only = self.query_sides == TEXT_ONLY
        query = side_text(window.query, "query", self.name) if text_only else window.query.text or ""
        texts = []
        for record in window.candidates:
            if "i" in self.document_sides:
                check_side(record, "document")
                texts.append(record.text or "")
            else:
                texts.append(side_text(record, "document", self.name))
        if self.format.clean:
            return no_brackets(fix_text(query)), [clean_passage(t, words) for t in texts]
        return query, [t if words is None else " ".join(t.split()[:words]) for t in texts]

    def _with_think_block(self, prompt: str) -> str:
        return prompt + THINK_BLOCK if self.think_block and not prompt.endswith(THINK_BLOCK) else prompt

    def prompt(self, window: Window) -> tuple[str, list[Image.Image]]:
        """The rendered prompt of a window and the images it shows, in order (none here)."""
        self.ready()
        words = self.max_passage_words
        budget = 0 if self.max_length is None else self.max_length - self._answer_tokens(len(window.candidates))
        while True:
            query, texts = self._texts(window, words)
            prompt = self._render(query, texts, self.format.labels(len(texts)))
            if self.max_length is None or (n := len(self.tokenizer.encode(prompt))) <= budget:
                return prompt, []
            if words == 0:
                raise MRBError(
                    f"the window of query {window.query.id!r} needs {n} prompt tokens even with empty passages, more than "
                    f"max_length {self.max_length} leaves beside the answer ({budget}): raise max_length or lower window"
                )
            longest = max(len(t.split()) for t in texts)
            words = max(0, (longest if words is None else words) - max(1, (n - budget) // (len(texts) * 4)))  # rank_llm's step

    def _render(self, query: str, texts: list[str], labels: list[str]) -> str:
        if self.format.text_prompt is not None:
            return self._with_think_block(self.format.text_prompt(query, texts, labels))
        messages = self.format.messages(query, None, [(t, None) for t in texts], labels)
        flat = [{"role": m["role"], "content": "".join(p["text"] for p in m["content"])} for m in messages]
        rendered = self.tokenizer.apply_chat_template(flat, tokenize=False, add_generation_prompt=True)
        return self._with_think_block(fix_text(rendered) if self.format.clean else rendered)

    def _answer_tokens(self, n: int) -> int:
        """Tokens of the full permutation ``[1] > [2] > … > [n]`` (rank_llm's output budget)."""
        answer = " > ".join(f"[{label}]" for label in self.format.labels(n))
        return len(self.tokenizer.encode(answer, add_special_tokens=False))

    # ── the model ──

    def inputs(self, prompts: list[str], images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """The batch's model inputs, left-padded; a prompt is tokenised as a served model's is (with the
        tokenizer's special tokens)."""
        return dict(self.tokenizer(prompts, return_tensors="pt", padding=True))

    def rank_windows(self, windows: Sequence[Window]) -> list[list[int]]:
        """Windows of one size at a time (the answer's length depends on it), each size in one batch."""
        self.ready()
        orders: list[list[int]] = [[] for _ in windows]
        for size in sorted({len(w.candidates) for w in windows}):
            at = [i for i, w in enumerate(windows) if len(w.candidates) == size]
            prompts, images = [], []
            for i in at:
                prompt, shown = self.prompt(windows[i])
                prompts.append(prompt)
                images += shown
            for i, order in zip(at, self._orders(self.inputs(prompts, images), size)):
                orders[i] = order
        return orders

    @torch.inference_mode()
    def _orders(self, inputs: dict[str, torch.Tensor], size: int) -> list[list[int]]:
        from transformers import GenerationConfig

        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        config = self.model.generation_config
        eos = config.eos_token_id if config.eos_token_id is not None else self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id
        if self.first_token_logits:
            at = 1  # the label follows the answer's opening "[" (rank_llm reads this position)
            greedy = GenerationConfig(
                do_sample=False,
                max_new_tokens=at + 1,
                min_new_tokens=at + 1,
                eos_token_id=eos,
                pad_token_id=pad,
                output_logits=True,
                return_dict_in_generate=True,
            )
            out = self.model.generate(**inputs, generation_config=greedy)
            logits = out.logits[at][:, self.label_ids[:size]].float().cpu()
            orders: list[list[int]] = torch.argsort(logits, dim=1, descending=True, stable=True).tolist()  # ties: input order
            return orders
        length = self.max_new_tokens or self._answer_tokens(size)
        shortest = 0 if self.max_new_tokens else length  # rank_llm generates exactly the permutation's tokens
        greedy = GenerationConfig(
            do_sample=False, max_new_tokens=length, min_new_tokens=shortest, eos_token_id=eos, pad_token_id=pad
        )
        out = self.model.generate(**inputs, generation_config=greedy)
        answers = self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return [parse_ranking(a, size, self.format.alpha, self.format.strict) for a in answers]

    def settings(self) -> dict[str, Any]:
        return {
            **super().settings(),
            "format": self.format.name,
            "window": self.window,
            "stride": self.stride,
            "full_last_window": self.full_last_window,
            "first_token_logits": self.first_token_logits,
            "max_new_tokens": self.max_new_tokens,
            "max_passage_words": self.max_passage_words,
            "think_block": self.think_block,
        }


class QwenVLListwise(ChatListwise):
    """A Qwen-VL chat checkpoint (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5) as a listwise reranker: images as image
    parts of the prompt, processed within the pixel bounds (None: the processor's own).

    `max_length`, as MTEB's LightOn wrapper uses it, truncates the tokens of a window without images; a window
    with images is never cut (its prompt holds the whole of every image).
    """

    name = "listwise-qwen-vl"
    query_sides: frozenset[Side] = ALL_SIDES
    document_sides: frozenset[Side] = ALL_SIDES

    def __init__(self, checkpoint: str, *, min_pixels: int | None = None, max_pixels: int | None = None, **options: Any) -> None:
        """`options` are `ChatListwise`'s."""
        self.requested_pixels = (min_pixels, max_pixels)
        super().__init__(checkpoint, **options)

    def load(self) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = self.load_processor(AutoProcessor)
        self.tokenizer = self.processor.tokenizer
        self.model = self.load_model(AutoModelForImageTextToText, self.checkpoint)
        self.min_pixels, self.max_pixels = pixel_bounds(self.processor, self.requested_pixels)
        self._prepare_tokenizer()

    def prompt(self, window: Window) -> tuple[str, list[Image.Image]]:
        self.ready()
        query, texts = self._texts(window, self.max_passage_words)
        labels = self.format.labels(len(texts))
        query_image = self._image(window.query, "query")
        images = [self._image(record, "document") for record in window.candidates]
        shown = [image for image in [query_image, *images] if image is not None]
        if not shown and self.format.text_prompt is not None:
            return self._with_think_block(self.format.text_prompt(query, texts, labels)), []
        messages = self.format.messages(query, query_image, list(zip(texts, images)), labels)
        rendered = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self._with_think_block(rendered), shown

    def _image(self, record: Record, role: str) -> Image.Image | None:
        check_side(record, role)
        return record.image(self.max_pixels, role)

    def inputs(self, prompts: list[str], images: list[Image.Image]) -> dict[str, torch.Tensor]:
        if images:
            size = {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels}
            return dict(self.processor(text=prompts, images=images, size=size, padding=True, return_tensors="pt"))
        cut = {"truncation": True, "max_length": self.max_length} if self.max_length is not None else {}
        return dict(self.processor(text=prompts, padding=True, return_tensors="pt", **cut))

    def settings(self) -> dict[str, Any]:
        # as requested (None: the processor's own, part of the weights digest): known before the model loads
        return {**super().settings(), "min_pixels": self.requested_pixels[0], "max_pixels": self.requested_pixels[1]}
