"""Qwen3-Reranker: a causal LM scored by p(yes) over ("yes", "no") after a fixed prefix/body/suffix template.

A query's candidates share the template prefix, the instruction and the query: with prefix sharing (the
default) that common prefix runs once per query in a batch (`mrb.rerankers.prefix`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mrb.data import Pair
from mrb.errors import MRBError
from mrb.rerankers.base import TEXT_ONLY
from mrb.rerankers.hf import TransformersReranker, project_two_tokens, side_text, token_id
from mrb.rerankers.prefix import COUNTERS, Plan, Row, last_hidden_states, plan_rows
from mrb.tasks import Side

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
BODY = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


class Qwen3Reranker(TransformersReranker):
    """Prefix + body + suffix token ids, left-padded; only the body is truncated, so the template survives.

    `prefix_sharing` (default on) runs the rows' common prefix once per query of a batch; off, every row
    runs whole (scores agree to float rounding, so it is not part of `settings()`). `counters` add up
    pairs, tokens through the model and prefix tokens saved.
    """

    name = "qwen3-reranker"
    query_sides: frozenset[Side] = TEXT_ONLY
    document_sides: frozenset[Side] = TEXT_ONLY

    def __init__(self, checkpoint: str, *, prefix_sharing: bool = True, **options: Any) -> None:
        """`options` are `TransformersReranker`'s (revision, device, dtype, attention, max length, remote code)."""
        self.prefix_sharing = prefix_sharing
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        super().__init__(checkpoint, **options)

    def load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = self.load_processor(AutoTokenizer)
        self.prefix_ids = self.tokenizer.encode(PREFIX, add_special_tokens=False)
        self.suffix_ids = self.tokenizer.encode(SUFFIX, add_special_tokens=False)
        self.token_ids = (token_id(self.tokenizer, "yes"), token_id(self.tokenizer, "no"))
        template = len(self.prefix_ids) + len(self.suffix_ids)
        if self.max_length is not None and self.max_length <= template:
            raise MRBError(
                f"max_length {self.max_length} leaves no room for the pair: the template alone takes {template} tokens"
            )
        self.model = self.load_model(AutoModelForCausalLM, self.checkpoint)

    def body(self, pair: Pair) -> str:
        query = side_text(pair.query, "query", self.name)
        doc = side_text(pair.document, "document", self.name)
        return BODY.format(instruction=pair.instruction or DEFAULT_INSTRUCTION, query=query, doc=doc)

    def token_rows(self, pairs: Sequence[Pair]) -> list[list[int]]:
        """prefix + body + suffix ids per pair, the body cut from its end so the whole fits max_length."""
        self.ready()
        truncate: dict[str, Any] = {}
        if self.max_length is not None:
            truncate = {"truncation": True, "max_length": self.max_length - len(self.prefix_ids) - len(self.suffix_ids)}
        bodies = self.tokenizer([self.body(p) for p in pairs], add_special_tokens=False, **truncate)["input_ids"]
        return [self.prefix_ids + body + self.suffix_ids for body in bodies]

    def prepare(self, pairs: Sequence[Pair]) -> Plan:
        """The passes of the batch: rows grouped by query, positions 0 … n − 1 per row."""
        self.ready()
        rows = [Row(ids, torch.arange(len(ids)).view(1, -1), p.query.id) for p, ids in zip(pairs, self.token_rows(pairs))]
        return plan_rows(rows, self.tokenizer.pad_token_id, self.prefix_sharing)

    def forward(self, prepared: Plan) -> list[float]:
        scores = project_two_tokens(self.model, last_hidden_states(self.model.base_model, prepared), self.token_ids)
        prepared.count(self.counters, len(scores))
        return scores
