"""Text cross-encoders (bge-reranker-v2-m3 and kin): a sequence-classification head over (query, document)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from mrb.data import Pair
from mrb.rerankers.base import TEXT_ONLY
from mrb.rerankers.hf import TransformersReranker, side_text
from mrb.tasks import Side

if TYPE_CHECKING:
    from transformers import BatchEncoding


class CrossEncoder(TransformersReranker):
    """Tokenises (query, document) as a text pair (longest-first truncation); score = sigmoid(logit)."""

    name = "cross-encoder"
    query_sides: frozenset[Side] = TEXT_ONLY
    document_sides: frozenset[Side] = TEXT_ONLY

    def load(self) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = self.load_processor(AutoTokenizer)
        self.model = self.load_model(AutoModelForSequenceClassification, self.checkpoint)

    def prepare(self, pairs: Sequence[Pair]) -> BatchEncoding:
        self.ready()
        queries = [side_text(p.query, "query", self.name) for p in pairs]
        docs = [side_text(p.document, "document", self.name) for p in pairs]
        return self.tokenizer(
            queries, docs, padding=True, truncation=self.max_length is not None, max_length=self.max_length, return_tensors="pt"
        )

    @torch.inference_mode()
    def forward(self, prepared: BatchEncoding) -> list[float]:
        logits = self.model(**prepared.to(self.device)).logits.view(-1).double()
        return torch.sigmoid(logits).tolist()
