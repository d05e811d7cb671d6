"""Text rerankers: Qwen3-Reranker (causal LM, prefix/body/suffix) and the bge-style cross-encoder."""

from __future__ import annotations

import pytest
import torch

from mrb.data import Pair, Record
from mrb.errors import MRBError
from mrb.rerankers.cross_encoder import CrossEncoder
from mrb.rerankers.text_llm import Qwen3Reranker
from mrb.tasks import TaskType
from tests.test_rerankers_qwen import SYSTEM_IDS, TAIL_IDS, USER_IDS
from tests.tiny_models import artefact, image_bytes

# Qwen3-Reranker's system prompt is the Qwen-VL yes/no one, then the user turn's start (tests/test_rerankers_qwen.py)
PREFIX_IDS = SYSTEM_IDS + USER_IDS
SUFFIX_IDS = TAIL_IDS + [151667, 271, 151668, 271]  # …assistant\n<think>\n\n</think>\n\n
PAIR = Pair("Find the answer.", Record("q1", "what do cats eat?"), Record("d1", "Cats eat fish."))
# "<Instruct>: Find the answer.\n<Query>: what do cats eat?\n<Document>: Cats eat fish."
BODY_IDS = [
    27,
    641,
    1235,
    26818,
    7379,
    279,
    4226,
    624,
    27,
    2859,
    26818,
    1128,
    653,
    19423,
    8180,
    5267,
    75692,
    26818,
    50749,
    8180,
    7640,
    13,
]
MIXED = [
    PAIR,
    Pair("Find the answer.", Record("q2", "sofa"), Record("d2", "A sofa is a long upholstered seat for several people. " * 5)),
    Pair("Another instruction entirely.", Record("q3", "what do dogs eat, and when, and how much?"), Record("d3", "Meat.")),
]


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory) -> Qwen3Reranker:
    return Qwen3Reranker(str(artefact(tmp_path_factory, "qwen3_lm")))


@pytest.fixture(scope="module")
def bge(tmp_path_factory) -> CrossEncoder:
    return CrossEncoder(str(artefact(tmp_path_factory, "cross_encoder")), max_length=32)


def test_qwen3_reranker_template_golden(qwen3: Qwen3Reranker) -> None:
    assert qwen3.body(PAIR) == "<Instruct>: Find the answer.\n<Query>: what do cats eat?\n<Document>: Cats eat fish."
    assert qwen3.token_rows([PAIR]) == [PREFIX_IDS + BODY_IDS + SUFFIX_IDS]
    assert qwen3.token_ids == (9693, 2152)  # "yes", "no"


def test_qwen3_reranker_scores_follow_the_rule_and_ignore_batching(qwen3: Qwen3Reranker) -> None:
    scores = qwen3.score(MIXED)
    rows = qwen3.token_rows(MIXED)
    width = max(map(len, rows))
    ids = torch.tensor([[qwen3.tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    with torch.no_grad():
        logits = qwen3.model(input_ids=ids, attention_mask=mask).logits[:, -1, [9693, 2152]].double()
    assert scores == pytest.approx(torch.softmax(logits, -1)[:, 0].tolist(), abs=1e-6)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert [qwen3.score([p])[0] for p in MIXED] == pytest.approx(scores, abs=1e-5)


def test_qwen3_reranker_truncates_only_the_body(qwen3: Qwen3Reranker, monkeypatch) -> None:
    monkeypatch.setattr(qwen3, "max_length", len(PREFIX_IDS) + len(SUFFIX_IDS) + 10)
    long_row, short_row = qwen3.token_rows([MIXED[1], PAIR])
    assert len(long_row) == qwen3.max_length
    assert long_row[: len(PREFIX_IDS)] == PREFIX_IDS and long_row[-len(SUFFIX_IDS) :] == SUFFIX_IDS
    assert short_row == PREFIX_IDS + BODY_IDS[:10] + SUFFIX_IDS  # the body keeps its start


def test_qwen3_reranker_rejects_a_max_length_without_room(tmp_path_factory) -> None:
    with pytest.raises(MRBError, match="the template alone takes 48 tokens"):
        Qwen3Reranker(str(artefact(tmp_path_factory, "qwen3_lm")), max_length=48).ready()


def test_text_rerankers_take_text_only(qwen3: Qwen3Reranker, bge: CrossEncoder) -> None:
    for reranker in (qwen3, bge):
        assert [t.value for t in TaskType if reranker.supports(t)] == ["t2t"]
        with pytest.raises(MRBError, match=r"document 'd-img' has no text, and .* reads text only"):
            reranker.score([Pair("x", PAIR.query, Record("d-img", None, image_bytes("coffee", (32, 32))))])
        with pytest.raises(MRBError, match="query 'q-empty' has neither text nor image"):
            reranker.score([Pair("x", Record("q-empty", ""), PAIR.document)])


def test_cross_encoder_scores_are_the_sigmoid_of_the_logit(bge: CrossEncoder) -> None:
    scores = bge.score(MIXED)
    enc = bge.tokenizer(
        [p.query.text for p in MIXED],
        [p.document.text for p in MIXED],
        padding=True,
        truncation=True,
        max_length=32,
        return_tensors="pt",
    )
    assert enc["input_ids"].shape[1] == 32  # the long document was cut to max_length
    with torch.no_grad():
        logits = bge.model(**enc).logits.view(-1).double()
    assert scores == pytest.approx(torch.sigmoid(logits).tolist(), abs=1e-6)
    assert [bge.score([p])[0] for p in MIXED] == pytest.approx(scores, abs=1e-5)
    assert bge.settings()["max_length"] == 32
