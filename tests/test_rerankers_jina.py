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
    return JinaRerankerM0(str(artefact(tmp_path_factory, "jina")), trust_remote_code=True, max_length=2048)


def test_refuses_remote_code_unless_trusted(tmp_path_factory) -> None:
    with pytest.raises(MRBError, match="pass --trust-remote-code"):
        JinaRerankerM0(str(artefact(tmp_path_factory, "jina")))


def test_code_that_does_not_load_names_the_transformers_version(tmp_path_factory) -> None:
    with pytest.raises(MRBError, match=f"did not load with transformers {transformers.__version__} .*NoSuchName"):
        JinaRerankerM0(str(artefact(tmp_path_factory, "jina_broken")), trust_remote_code=True)


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
