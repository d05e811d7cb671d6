"""Declared modality fallbacks: off by default, feeding exactly the reduced side, marked, and their own identity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mrb
from mrb.cli import main
from mrb.data import Pair, Record
from mrb.errors import MRBError
from mrb.rerankers.fallback import MODES, Fallback, adaptation
from mrb.rerankers.qwen_vl import MONOQWEN_ADAPTATION, MonoQwenVL
from mrb.results import read_leaderboard
from mrb.tasks import TaskType
from tests.tiny_models import artefact, image_bytes

PIXELS = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}


class Recorder:
    """A reranker of text queries and image queries (not image+text) that records what it is fed."""

    name = "recorder"
    version = "1"
    query_sides = frozenset({"t", "i"})
    document_sides = frozenset({"t", "i"})

    def __init__(self) -> None:
        self.fed: set[tuple[bool, bool, bool, bool]] = set()

    def score(self, pairs: list[Pair]) -> list[float]:
        for p in pairs:
            self.fed.add((p.query.text is not None, p.query.has_image, p.document.text is not None, p.document.has_image))
        return [float(len(p.document.text or "")) - i * 1e-3 for i, p in enumerate(pairs)]


def board(path: Path) -> dict[str, dict]:
    return read_leaderboard(path).set_index("task").to_dict("index")


def test_without_a_fallback_a_side_the_model_lacks_is_unsupported(tmp_path) -> None:
    rows = mrb.evaluate(Recorder(), "mini", output_dir=tmp_path, quiet=True).set_index("task")
    assert rows.at["MiniPhotoQA-IT2T", "status"] == "unsupported"
    assert set(rows["adapted"]) == {""}


@pytest.mark.parametrize(("mode", "query"), [("image-only", (False, True)), ("text-only", (True, False))])
def test_a_fallback_feeds_only_the_image_or_the_text_and_marks_the_task(tmp_path, mode, query) -> None:
    model = Recorder()
    mrb.evaluate(model, "MiniPhotoQA-IT2T", output_dir=tmp_path, quiet=True, fallback=mode)
    row = board(tmp_path)["MiniPhotoQA-IT2T"]
    assert (row["status"], row["adapted"]) == ("ok", mode)
    assert model.fed == {(*query, True, False)}  # image+text queries reduced; text documents as they are
    assert json.loads(row["settings"])["fallback"] == mode


def test_tasks_the_model_takes_as_they_are_are_not_marked_and_score_as_without(tmp_path) -> None:
    plain = mrb.evaluate(Recorder(), "MiniFacts-T2T,MiniPhotos-I2T", quiet=True).set_index("task")
    adapted = mrb.evaluate(Recorder(), "MiniFacts-T2T,MiniPhotos-I2T", quiet=True, fallback="image-only").set_index("task")
    assert list(adapted["adapted"]) == ["", ""]
    assert list(adapted["value"]) == list(plain["value"])


def test_a_missing_text_or_image_side_is_never_made_up() -> None:
    text_only = Fallback(mrb.rerankers.as_reranker(lambda pairs: [0.0] * len(pairs)), "text-only")
    text_only.inner.query_sides = text_only.inner.document_sides = frozenset({"t"})
    assert [t.value for t in TaskType if text_only.supports(t)] == ["t2t", "t2it", "it2t", "it2it"]
    assert adaptation(text_only, TaskType("it2t")) == adaptation(text_only, TaskType("t2it")) == "text-only"
    assert adaptation(text_only, TaskType("t2t")) == ""
    assert adaptation(text_only, TaskType("t2i")) == ""  # unsupported: nothing was adapted
    with pytest.raises(MRBError, match=r"^unknown fallback 'image': use one of image-only, text-only$"):
        Fallback(text_only.inner, "image")  # type: ignore[arg-type]


def test_fallback_and_plain_results_are_different_models(tmp_path) -> None:
    mrb.evaluate(Recorder(), "MiniPhotos-I2T", output_dir=tmp_path, quiet=True)
    with pytest.raises(MRBError) as refused:
        mrb.evaluate(Recorder(), "MiniPhotos-I2T", output_dir=tmp_path, quiet=True, fallback="image-only")
    assert str(refused.value) == (
        f"results folder {tmp_path} holds results of another model named 'recorder' (they differ in fallback); give this "
        "model its own name (or a new version), use another output folder, or pass --overwrite always to replace those results"
    )
    mrb.evaluate(Recorder(), "MiniPhotos-I2T", output_dir=tmp_path, quiet=True, fallback="image-only", name="recorder+image")
    assert set(read_leaderboard(tmp_path)["model"]) == {"recorder", "recorder+image"}


def test_cli_fallback_runs_a_text_reranker_on_image_text_queries(tmp_path, capsys) -> None:
    assert main(["run", "--model", "bm25", "--tasks", "mini", "--fallback", "text-only", "--output", str(tmp_path), "-q"]) == 0
    rows = board(tmp_path)
    assert {t: (r["status"], r["adapted"]) for t, r in rows.items()} == {
        "MiniFacts-T2T": ("ok", ""),
        "MiniPhotos-T2I": ("unsupported", ""),
        "MiniPhotos-I2T": ("unsupported", ""),
        "MiniPhotoQA-IT2T": ("ok", "text-only"),
        "MiniPhotos-I2I": ("unsupported", ""),
    }
    capsys.readouterr()
    assert main(["report", "--results", str(tmp_path)]) == 0
    report = capsys.readouterr().out
    assert "| bm25 †      |     82.23 |" in report
    assert "| MiniPhotoQA-IT2T | IT→T |   **76.38** | 70.17† |" in report
    assert "| MiniFacts-T2T    | T→T  |   **83.12** |  82.23 |" in report
    assert (
        "† adapted: scored through a declared modality fallback, not the model's own sides: bm25 (text-only on MiniPhotoQA-IT2T)."
        in report
    )
    with pytest.raises(SystemExit) as bad:
        main(["run", "--model", "bm25", "--fallback", "image"])
    assert bad.value.code == 2
    assert "argument --fallback: invalid choice: 'image' (choose from 'image-only', 'text-only')" in capsys.readouterr().err


def test_cli_choices_are_the_modes() -> None:
    from mrb.cli import _parser

    run = _parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    assert next(a for a in run._actions if a.dest == "fallback").choices == MODES


@pytest.fixture(scope="module")
def any_side(tmp_path_factory) -> MonoQwenVL:
    return MonoQwenVL(str(artefact(tmp_path_factory, "monoqwen_lora")), any_side=True, **PIXELS)


def test_monoqwen_any_side_prompt(tmp_path_factory, any_side: MonoQwenVL) -> None:
    native = MonoQwenVL(str(artefact(tmp_path_factory, "monoqwen_lora")), **PIXELS)
    question = "Assert the relevance of the previous image document to the following query, answer True or False."
    start = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    image, end = "<|vision_start|><|image_pad|><|vision_end|>", "<|im_end|>\n<|im_start|>assistant\n"
    text, picture = Record("q", "a cat"), Record("p", None, image_bytes("chelsea", (64, 64)))
    both, doc = Record("b", "who is this?", image_bytes("astronaut", (64, 64))), Record("d", "Cats like sofas.")
    t2i = Pair("", text, picture)
    assert any_side.render(any_side.conversations([t2i])) == native.render(native.conversations([t2i]))
    assert any_side.render(any_side.conversations([Pair("", both, doc), Pair("", text, doc)])) == [
        f"{start}Cats like sofas.\n{question} The query is: {image}who is this?{end}",
        f"{start}Cats like sofas.\n{question} The query is: a cat{end}",
    ]
    assert any_side.settings()["format"] == "monoqwen-any-side" != native.settings()["format"]


def test_monoqwen_preset_with_a_fallback_scores_every_mini_task_and_marks_its_adaptation(tmp_path_factory, tmp_path) -> None:
    checkpoint = str(artefact(tmp_path_factory, "monoqwen_lora"))
    plain = mrb.evaluate("monoqwen2-vl", "mini", checkpoint=checkpoint, quiet=True, **PIXELS).set_index("task")
    assert list(plain["status"]) == ["unsupported", "ok", "unsupported", "unsupported", "unsupported"]
    adapted = mrb.evaluate("monoqwen2-vl", "mini", checkpoint=checkpoint, fallback="image-only", quiet=True, **PIXELS)
    adapted = adapted.set_index("task")
    assert list(adapted["status"]) == ["ok"] * 5
    assert adapted["adapted"].to_dict() == {
        "MiniFacts-T2T": MONOQWEN_ADAPTATION,
        "MiniPhotos-T2I": "",
        "MiniPhotos-I2T": MONOQWEN_ADAPTATION,
        "MiniPhotoQA-IT2T": MONOQWEN_ADAPTATION,
        "MiniPhotos-I2I": MONOQWEN_ADAPTATION,
    }
    assert adapted.at["MiniPhotos-T2I", "value"] == pytest.approx(plain.at["MiniPhotos-T2I", "value"], abs=1e-6)


def test_with_a_fallback_jina_and_monoqwen_take_all_40_tasks_like_the_papers_rows() -> None:
    from mrb.options import RunOptions
    from mrb.rerankers import get_reranker
    from mrb.session import Session
    from mrb.tasks import load_tasks

    types = [spec.type for spec in load_tasks("all")]
    jina = get_reranker("jina-reranker-m0", trust_remote_code=True)
    assert (len(types), sum(map(jina.supports, types))) == (40, 28)  # no image+text side of its own
    for preset in ("jina-reranker-m0", "monoqwen2-vl"):
        options = {"trust_remote_code": True} if preset == "jina-reranker-m0" else {}
        model = Session(preset, "all", RunOptions(), fallback="image-only", model_options=options)._reranker()
        assert sum(map(model.supports, types)) == 40, preset


class Preparing(mrb.Reranker):
    """A reranker of text and image sides split into prepare (the CPU work) and forward."""

    name = "preparing"
    query_sides = document_sides = frozenset({"t", "i"})

    def prepare(self, pairs):
        return [float(len(p.document.text or "")) - i * 1e-3 for i, p in enumerate(pairs)]

    def forward(self, prepared):
        return prepared


def test_a_fallback_prepares_ahead_exactly_when_the_model_it_feeds_does(tmp_path) -> None:
    """A score-only model behind a fallback keeps the runner's image prefetch (it does not prepare), a preparing
    one keeps its prepare; both score as they do fed the reduced sides by hand."""
    from mrb.rerankers.base import prepares_ahead

    score_only = mrb.rerankers.as_reranker(Recorder())
    assert (prepares_ahead(Fallback(score_only, "image-only")), prepares_ahead(Fallback(Preparing(), "image-only"))) == (
        False,
        True,
    )
    values = [
        mrb.evaluate(model, "MiniPhotoQA-IT2T", output_dir=tmp_path / name, quiet=True, fallback="text-only")["value"].iloc[0]
        for name, model in (("recorder", Recorder()), ("preparing", Preparing()))
    ]
    assert values[0] == values[1]
