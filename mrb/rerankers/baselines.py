"""Reference rerankers: first-stage order, seeded random, the qrels oracle and BM25."""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mrb.errors import MRBError
from mrb.rerankers.base import TEXT_ONLY, Reranker

if TYPE_CHECKING:
    from mrb.data import Pack, Pair
    from mrb.tasks import TaskSpec


class FirstStage(Reranker):
    """Returns the first-stage score of each candidate, so the first-stage order is kept."""

    name = "first-stage"

    def __init__(self) -> None:
        self._scores: dict[tuple[str, str], float] = {}

    def start_task(self, task: TaskSpec, pack: Pack) -> None:
        c = pack.candidates
        self._scores = dict(zip(zip(c["query_id"], c["doc_id"]), c["score"].astype(float)))

    def score(self, pairs: Sequence[Pair]) -> list[float]:
        return [self._scores[(p.query.id, p.document.id)] for p in pairs]


class RandomScores(Reranker):
    """Uniform scores in [0, 1) drawn from a hash of (seed, query id, doc id): batch-order independent."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def score(self, pairs: Sequence[Pair]) -> list[float]:
        out = []
        for p in pairs:
            digest = hashlib.blake2b(f"{self.seed}\0{p.query.id}\0{p.document.id}".encode(), digest_size=8).digest()
            out.append(struct.unpack("<Q", digest)[0] / 2**64)
        return out

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed}


class Oracle(Reranker):
    """Scores each candidate by its relevance label (0 when unjudged): the ceiling of the candidate lists."""

    name = "oracle"

    def __init__(self) -> None:
        self._labels: dict[tuple[str, str], int] = {}

    def start_task(self, task: TaskSpec, pack: Pack) -> None:
        q = pack.qrels
        self._labels = dict(zip(zip(q["query_id"], q["doc_id"]), q["relevance"].astype(int)))

    def score(self, pairs: Sequence[Pair]) -> list[float]:
        return [float(self._labels.get((p.query.id, p.document.id), 0)) for p in pairs]


_TOKEN = re.compile(r"\w+", re.UNICODE)


def tokenize(text: str | None) -> list[str]:
    return _TOKEN.findall((text or "").lower())


class BM25(Reranker):
    """Okapi BM25 (rank_bm25) with document statistics taken from the task's pack; text only."""

    name = "bm25"
    query_sides = TEXT_ONLY
    document_sides = TEXT_ONLY

    def __init__(self, k1: float = 1.5, b: float = 0.75) -> None:
        try:
            from rank_bm25 import BM25Okapi
        except ImportError as exc:
            raise MRBError("the bm25 reranker needs rank_bm25: pip install 'mrb[bm25]'") from exc
        self._bm25_class = BM25Okapi
        self.k1, self.b = k1, b
        self._index: Any = None
        self._position: dict[str, int] = {}

    def start_task(self, task: TaskSpec, pack: Pack) -> None:
        ids = list(pack.documents)
        self._position = {doc_id: i for i, doc_id in enumerate(ids)}
        self._index = self._bm25_class([tokenize(pack.documents[d].text) for d in ids], k1=self.k1, b=self.b)

    def score(self, pairs: Sequence[Pair]) -> list[float]:
        """One BM25 call per distinct query in the batch, over that query's documents."""
        rows: dict[str, list[int]] = {}
        for i, p in enumerate(pairs):
            rows.setdefault(p.query.id, []).append(i)
        out = [0.0] * len(pairs)
        for members in rows.values():
            query = tokenize(pairs[members[0]].query.text)
            scores = self._index.get_batch_scores(query, [self._position[pairs[i].document.id] for i in members])
            for i, value in zip(members, scores):
                out[i] = float(value)
        return out

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "k1": self.k1, "b": self.b}
