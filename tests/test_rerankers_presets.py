"""Model presets: their options fit their adapters, and each loads a tiny checkpoint of its architecture."""

from __future__ import annotations

import pytest

from mrb.data import Pair, Record
from mrb.errors import MRBError
from mrb.rerankers import PRESETS, get_reranker
from mrb.rerankers.base import option_parameters, resolve_adapter
from tests.tiny_models import artefact, image_bytes

# Presets sharing adapter and options load the same way: one tiny checkpoint per group.
GROUPS = [
    (("gmr-7b", "lychee-rerank-mm", "gmr-3b"), "qwen2_5_vl", {}),
    (("qwen3-vl-reranker-2b", "qwen3-vl-reranker-8b"), "qwen3_vl", {}),
    (("monoqwen2-vl",), "monoqwen_lora", {}),
    (("jina-reranker-m0",), "jina", {"trust_remote_code": True}),
    (("qwen3-reranker-0.6b", "qwen3-reranker-4b", "qwen3-reranker-8b"), "qwen3_lm", {}),
    (("bge-reranker-v2-m3",), "cross_encoder", {}),
]
MODEL_PRESETS = [name for names, _, _ in GROUPS for name in names]
# Listwise presets rank windows rather than score pairs: tests/test_rerankers_listwise.py loads them.
LISTWISE_PRESETS = ["rank-zephyr-7b", "first-mistral", "lighton-rerank-lw-0.8b", "lighton-rerank-lw-2b", "lighton-rerank-lw-4b"]

TEXT = Record("t", "a cat on a sofa")
IMAGE = Record("i", None, image_bytes("chelsea", (64, 48)))
BOTH = Record("it", "a cat", image_bytes("astronaut", (48, 64)))
SIDES = {"t": TEXT, "i": IMAGE, "it": BOTH}


def test_every_model_preset_is_grouped_and_its_options_fit_its_adapter() -> None:
    checkpoints = sorted(p.name for p in PRESETS.values() if p.hub_id and p.adapter != "sentence-embedding")
    assert sorted(MODEL_PRESETS + LISTWISE_PRESETS) == checkpoints
    for name in MODEL_PRESETS + LISTWISE_PRESETS:
        preset = PRESETS[name]
        params = option_parameters(resolve_adapter(preset.adapter))
        assert set(preset.adapter_options()) <= {p.name for p in params}, name
        assert preset.license and preset.parameters and preset.source, name
    assert "may not exist" in PRESETS["gmr-3b"].unverified
    assert PRESETS["gmr-7b"].adapter_options() == {"min_pixels": 3136, "max_pixels": 1003520, "max_length": 3200}
    assert PRESETS["qwen3-vl-reranker-2b"].adapter_options() == {"min_pixels": 4096, "max_pixels": 1843200, "max_length": 10240}


def test_jina_preset_needs_trust_remote_code() -> None:
    with pytest.raises(MRBError, match="pass --trust-remote-code"):
        get_reranker("jina-reranker-m0")


@pytest.mark.parametrize(("names", "kind", "extra"), GROUPS, ids=[names[0] for names, _, _ in GROUPS])
def test_preset_loads_a_tiny_checkpoint_and_scores_a_mixed_batch(tmp_path_factory, names, kind, extra) -> None:
    assert len({(PRESETS[n].adapter, repr(PRESETS[n].adapter_options())) for n in names}) == 1
    reranker = get_reranker(names[0], checkpoint=str(artefact(tmp_path_factory, kind)), **extra)
    assert reranker.name == names[0]
    pairs = [Pair("Find the match.", SIDES[q], SIDES[d]) for q in reranker.query_sides for d in reranker.document_sides]
    scores = reranker.score(pairs)
    assert len(scores) == len(pairs) > 0
    assert all(0.0 <= s <= 1.0 for s in scores)
    settings = reranker.settings()
    assert settings["checkpoint"] == str(artefact(tmp_path_factory, kind))
    card = {"text": 1024, "image": 2048} if kind == "jina" else None  # jina: its card's lengths when none is set
    assert settings["max_length"] == (PRESETS[names[0]].max_length or card)
    bounds = {k: v for k, v in PRESETS[names[0]].adapter_options().items() if k.endswith("_pixels")}
    assert {k: settings[k] for k in bounds} == bounds  # the preset's pixel bounds reach the adapter


def test_the_registry_refuses_a_name_another_class_holds():
    from mrb.errors import MRBError
    from mrb.rerankers.base import _ADAPTERS, Reranker, register, resolve_adapter

    with pytest.raises(MRBError) as err:

        @register("bm25")
        class MyBM25(Reranker):
            pass

    assert str(err.value) == (
        "adapter name 'bm25' is taken by mrb.rerankers.baselines:BM25; register "
        f"{__name__}:test_the_registry_refuses_a_name_another_class_holds.<locals>.MyBM25 under another name"
    )
    assert resolve_adapter("bm25").__name__ == "BM25"

    @register("my-scorer")
    class MyScorer(Reranker):
        pass

    try:
        assert register("my-scorer")(MyScorer) is MyScorer  # the same class again (a re-import) is fine
        assert resolve_adapter("my-scorer") is MyScorer
    finally:
        del _ADAPTERS["my-scorer"]


def test_the_preset_table_of_docs_models_is_generated_from_the_presets():
    import runpy
    from pathlib import Path

    script = runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "gen_models_doc.py"))
    assert script["main"](["--check"]) == 0, "docs/models.md is stale: run python scripts/gen_models_doc.py"
    assert (
        "| `gmr-7b` | `qwen-vl-yes-no` | `vec-ai/lychee-rerank-mm` (*unverified*) | unpinned | all | 3136 … 1003520 | 3200 |"
        in script["render_table"]()
    )
