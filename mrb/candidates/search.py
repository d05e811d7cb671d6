"""Exact top-k search over a streamed corpus, and seeded query sampling.

`TopK` keeps, for every query, the best `k` documents seen so far. Each score is packed with
its document's key into one int64 (order-preserving float32 bits in the high half, the
inverted key in the low half), so a single `torch.topk` orders by score, then by smaller key,
and no two entries ever tie: given keys that follow doc-id order, the lists are exact and
deterministic (score descending, then doc id ascending), whatever the batch boundaries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch

KEY_LIMIT = 1 << 32  # keys must fit in the low 32 bits
_LOW = KEY_LIMIT - 1


def pack_scores(scores: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """int64 codes that sort as (score descending, key ascending); `scores` float32, `keys` int64 < 2**32."""
    bits = (scores + 0.0).view(torch.int32).to(torch.int64)  # + 0.0 turns -0.0 into 0.0
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (ordered << 32) | (_LOW - keys)


def unpack_scores(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `pack_scores`: (float32 scores, int64 keys)."""
    ordered = codes >> 32
    bits = torch.where(ordered < 0, ordered ^ 0x7FFFFFFF, ordered).to(torch.int32)
    return bits.view(torch.float32), _LOW - (codes & _LOW)


class TopK:
    """A running exact top-k of ``queries @ documents.T`` over document batches.

    `exclude` gives, per query, a key never to return (the document whose id equals the query
    id, for tasks scored with ``ignore_identical_ids``), or -1. Query rows are processed in
    chunks of `chunk` so the score block stays bounded in memory.
    """

    def __init__(
        self,
        queries: torch.Tensor,
        k: int,
        *,
        exclude: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
        chunk: int = 4096,
    ) -> None:
        self.queries = queries.to(device, torch.float32)
        self.k, self.chunk, self.device = k, chunk, torch.device(device)
        self.exclude = None if exclude is None else exclude.to(self.device, torch.int64)
        self.best = torch.empty((len(queries), 0), dtype=torch.int64, device=self.device)

    def add(self, documents: torch.Tensor, keys: torch.Tensor) -> None:
        """Merge one batch of documents (embeddings and their int64 keys) into the running lists."""
        if keys.numel() and (int(keys.min()) < 0 or int(keys.max()) >= KEY_LIMIT):
            raise ValueError(f"document keys must lie in [0, {KEY_LIMIT})")
        documents = documents.to(self.device, torch.float32)
        keys = keys.to(self.device, torch.int64)
        merged = []
        for start in range(0, len(self.queries), self.chunk):
            scores = self.queries[start : start + self.chunk] @ documents.T
            if self.exclude is not None:
                same = self.exclude[start : start + self.chunk, None] == keys[None, :]
                scores = scores.masked_fill(same, float("-inf"))
            pool = torch.cat([self.best[start : start + self.chunk], pack_scores(scores, keys.expand_as(scores))], 1)
            merged.append(pool.topk(min(self.k, pool.shape[1]), dim=1).values)
        self.best = torch.cat(merged) if merged else self.best

    def result(self) -> list[list[tuple[float, int]]]:
        """Per query, its (score, key) list in rank order; excluded documents never appear."""
        scores, keys = unpack_scores(self.best.cpu())
        return [
            [(s, k) for s, k in zip(row_s.tolist(), row_k.tolist()) if s != float("-inf")] for row_s, row_k in zip(scores, keys)
        ]


def sample_key(seed: int, query_id: str) -> str:
    """The sort key of a query id under a seed: sha256 of ``"<seed>:<id>"`` (the same on every machine)."""
    return hashlib.sha256(f"{seed}:{query_id}".encode()).hexdigest()


def sample_queries(query_ids: Iterable[str], size: int, seed: int) -> list[str]:
    """The `size` ids with the smallest `sample_key`, in key order; every id when there are fewer.

    Neither input order nor Python's hash seed matter, and a smaller sample under the same
    seed is always a prefix of a larger one.
    """
    return sorted(set(query_ids), key=lambda qid: sample_key(seed, qid))[:size]
