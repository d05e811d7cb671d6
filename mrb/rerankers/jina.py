"""jina-reranker-m0 through its own remote code (`model.compute_score`), loaded only on the user's say-so."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from mrb.data import Pair, Record
from mrb.errors import MRBError
from mrb.rerankers.hf import TransformersReranker, check_side
from mrb.tasks import Side

# The model card's examples pass max_length 1024 for text documents and 2048 for image documents (its code's own
# default, 10240, is far above what the card uses); an explicit max_length overrides both.
CARD_MAX_LENGTH = {"text": 1024, "image": 2048}


class JinaRerankerM0(TransformersReranker):
    """Maps each MRB side onto jina's "text" or "image" type and calls its `compute_score` per type pair.

    jina takes a text or an image on each side, never both: image+text sides are unsupported.
    """

    name = "jina-reranker-m0"
    query_sides: frozenset[Side] = frozenset({"t", "i"})
    document_sides: frozenset[Side] = frozenset({"t", "i"})
    # jina's processor bound (its min_pixels is 3136): bounds the decoding of oversized images before its own
    # processor sees them, and the runner's token estimates
    max_pixels = 602112

    def __init__(self, checkpoint: str, **options: Any) -> None:
        """`options` are `TransformersReranker`'s; jina's own code runs only with ``trust_remote_code=True``."""
        super().__init__(checkpoint, **options)
        if not self.trust_remote_code:
            raise MRBError(
                f"{self.checkpoint} runs its own Python code from the checkpoint (jina-reranker-m0): "
                "pass --trust-remote-code (trust_remote_code=True) to allow it"
            )

    def load(self) -> None:
        import transformers

        self.model = self.load_model(transformers.AutoModel, self.checkpoint)  # its errors: hf.loading_error

    def _side(self, record: Record, role: str) -> tuple[str, str | Image.Image]:
        check_side(record, role)
        if record.has_image and record.text:
            raise MRBError(f"{role} {record.id!r} has both text and an image; jina-reranker-m0 takes one of them")
        if record.has_image:
            image = record.image(self.max_pixels, role)
            assert image is not None
            return "image", image
        return "text", record.text  # type: ignore[return-value]

    @torch.inference_mode()
    def score(self, pairs: Sequence[Pair]) -> list[float]:
        self.ready()
        groups: dict[tuple[str, str], list[tuple[int, list[Any]]]] = {}
        for i, pair in enumerate(pairs):
            qtype, query = self._side(pair.query, "query")
            dtype, doc = self._side(pair.document, "document")
            groups.setdefault((qtype, dtype), []).append((i, [query, doc]))
        scores = [0.0] * len(pairs)
        for (qtype, dtype), members in groups.items():
            length = self.max_length or CARD_MAX_LENGTH[dtype]
            out = self.model.compute_score([m[1] for m in members], query_type=qtype, doc_type=dtype, max_length=length)
            for (i, _), value in zip(members, torch.as_tensor(out, dtype=torch.float64).reshape(-1).tolist(), strict=True):
                scores[i] = value
        return scores

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "max_length": self.max_length or CARD_MAX_LENGTH}
