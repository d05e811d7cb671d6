"""jina-reranker-m0: remote code loaded only with trust_remote_code, MRB sides mapped onto its types.

Its real code cannot be fetched offline; a stand-in remote-code checkpoint (tests/tiny_models.py) goes
through the same loading path and `compute_score` contract.
"""

from __future__ import annotations

import pytest
import transformers

from mrb.data import Pair, Record
from mrb.errors import MRBError
from mrb.rerankers.jina import JinaRerankerM0
from mrb.tasks import TaskType
from tests.tiny_models import artefact, image_bytes

TEXT_Q = Record("q-text", "slm markdown")
IMAGE_Q = Record("q-img", None, image_bytes("astronaut", (40, 40)))
TEXT_D = Record("d-text", "a much longer text document")
IMAGE_D = Record("d-img", None, image_bytes("coffee", (48, 32)))


@pytest.fixture(scope="module")
def jina(tmp_path_factory) -> JinaRerankerM0:
    reranker = JinaRerankerM0(str(artefact(tmp_path_factory, "jina")), trust_remote_code=True, max_length=2048)
    reranker.ready()
    return reranker


def test_refuses_remote_code_unless_trusted(tmp_path_factory) -> None:
    with pytest.raises(MRBError, match="pass --trust-remote-code"):
        JinaRerankerM0(str(artefact(tmp_path_factory, "jina")))


def test_code_that_does_not_load_names_the_transformers_version(tmp_path_factory) -> None:
    folder = str(artefact(tmp_path_factory, "jina_broken"))
    reranker = JinaRerankerM0(folder, trust_remote_code=True)  # building loads nothing: the failure comes on ready()
    with pytest.raises(MRBError) as err:
        reranker.ready()
    assert str(err.value).startswith(
        f"JinaRerankerM0 cannot load {folder!r}: its own code (trust_remote_code) fails with transformers "
        f"{transformers.__version__} (ImportError: "
    )
    assert "NoSuchName" in str(err.value) and str(err.value).endswith("it may need the transformers release it was written for")


def test_a_hub_checkpoint_missing_while_offline_is_not_blamed_on_transformers() -> None:
    reranker = JinaRerankerM0("jinaai/jina-reranker-m0", trust_remote_code=True)  # HF_HUB_OFFLINE=1 in the tests
    with pytest.raises(MRBError) as err:
        reranker.ready()
    assert str(err.value) == (
        "JinaRerankerM0 cannot load 'jinaai/jina-reranker-m0': it is not in the local hub cache and the hub is off "
        "(HF_HUB_OFFLINE=1): fetch it where the hub can be reached (`hf download jinaai/jina-reranker-m0` and copy "
        "the hub cache here), or unset HF_HUB_OFFLINE"
    )


def test_pairs_are_grouped_by_jina_types(jina: JinaRerankerM0) -> None:
    pairs = [Pair("i", TEXT_Q, TEXT_D), Pair("i", TEXT_Q, IMAGE_D), Pair("i", IMAGE_Q, TEXT_D), Pair("i", TEXT_Q, TEXT_D)]
    jina.model.calls.clear()
    scores = jina.score(pairs)
    assert jina.model.calls == [
        {"n": 2, "query_type": "text", "doc_type": "text", "max_length": 2048},
        {"n": 1, "query_type": "text", "doc_type": "image", "max_length": 2048},
        {"n": 1, "query_type": "image", "doc_type": "text", "max_length": 2048},
    ]
    assert scores[0] == scores[3]
    assert scores == pytest.approx([jina.score([p])[0] for p in pairs], abs=1e-7)
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_sides(jina: JinaRerankerM0) -> None:
    assert [t.value for t in TaskType if jina.supports(t)] == ["t2t", "i2i", "t2i", "t2vd", "i2t"]
    with pytest.raises(MRBError, match="document 'd-both' has both text and an image"):
        jina.score([Pair("i", TEXT_Q, Record("d-both", "caption", IMAGE_D.image_bytes))])


def test_lengths_default_to_the_cards_per_document_type(tmp_path_factory) -> None:
    reranker = JinaRerankerM0(str(artefact(tmp_path_factory, "jina")), trust_remote_code=True)
    reranker.ready()
    reranker.model.calls.clear()
    reranker.score([Pair("i", TEXT_Q, TEXT_D), Pair("i", TEXT_Q, IMAGE_D)])
    assert [(c["doc_type"], c["max_length"]) for c in reranker.model.calls] == [("text", 1024), ("image", 2048)]
