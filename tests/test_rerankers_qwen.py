"""The Qwen-VL yes/no chat rerankers on tiny random checkpoints of the real architecture classes."""

from __future__ import annotations

import io
import sys

import pytest
import torch
from PIL import Image

from mrb.data import Pair, Record
from mrb.errors import MRBError
from mrb.rerankers.qwen_vl import MonoQwenVL, Qwen3VLReranker, QwenVLYesNo
from mrb.tasks import TaskType
from tests.tiny_models import artefact, image_bytes

PIXELS = {"min_pixels": 56 * 56, "max_pixels": 112 * 112}
INSTRUCTION = "Retrieve the matching item."

Q_TEXT = Record("q-text", "a cat on a sofa")
Q_IMAGE = Record("q-img", None, image_bytes("astronaut", (64, 64)))
Q_BOTH = Record("q-both", "who is this?", image_bytes("astronaut", (64, 64)))
D_TEXT = Record("d-text", "Cats like sofas.")
D_IMAGE = Record("d-img", None, image_bytes("coffee", (96, 64)))
D_BOTH = Record("d-both", "A cup of coffee.", image_bytes("chelsea", (64, 96)))
PAIRS = {
    "t2t": Pair(INSTRUCTION, Q_TEXT, D_TEXT),
    "t2i": Pair(INSTRUCTION, Q_TEXT, D_IMAGE),
    "i2t": Pair(INSTRUCTION, Q_IMAGE, D_TEXT),
    "it2it": Pair(INSTRUCTION, Q_BOTH, D_BOTH),
}

# Token ids of the real Qwen vocabulary ("system" 8948, "user" 872, "assistant" 77091, "yes" 9693, "no" 2152).
SYSTEM_IDS = [
    151644,
    8948,
    198,
    60256,
    3425,
    279,
    11789,
    20027,
    279,
    8502,
    3118,
    389,
    279,
    11361,
    323,
    279,
    758,
    1235,
    3897,
    13,
    7036,
    429,
    279,
    4226,
    646,
    1172,
    387,
    330,
    9693,
    1,
    476,
    330,
    2152,
    3263,
    151645,
    198,
]
USER_IDS = [151644, 872, 198]
TAIL_IDS = [151645, 198, 151644, 77091, 198]  # <|im_end|>\n<|im_start|>assistant\n
INSTRUCT_IDS = [
    27,
    641,
    1235,
    26818,
    31562,
    279,
    12579,
    1509,
    15757,
    2859,
    26818,
]  # "<Instruct>: Retrieve the matching item.<Query>:"
DOC_IDS = [198, 75692, 26818]  # "\n<Document>:"
VISION = 151652, 151655, 151653  # <|vision_start|> <|image_pad|> <|vision_end|>


def image_ids(n: int) -> list[int]:
    return [VISION[0], *[VISION[1]] * n, VISION[2]]


SYSTEM = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
ASSISTANT = "<|im_end|>\n<|im_start|>assistant\n"
GOLDEN = {
    "t2t": (
        f"{SYSTEM}<Instruct>: Retrieve the matching item.<Query>:a cat on a sofa\n<Document>:Cats like sofas.{ASSISTANT}",
        [64, 8251, 389, 264, 31069, *DOC_IDS, 34, 1862, 1075, 96406, 13],
    ),
    "t2i": (
        f"{SYSTEM}<Instruct>: Retrieve the matching item.<Query>:a cat on a sofa\n<Document>:{IMAGE}{ASSISTANT}",
        [64, 8251, 389, 264, 31069, *DOC_IDS, *image_ids(6)],
    ),
    "i2t": (
        f"{SYSTEM}<Instruct>: Retrieve the matching item.<Query>:{IMAGE}\n<Document>:Cats like sofas.{ASSISTANT}",
        [*image_ids(4), *DOC_IDS, 34, 1862, 1075, 96406, 13],
    ),
    "it2it": (
        f"{SYSTEM}<Instruct>: Retrieve the matching item.<Query>:{IMAGE}who is this?\n<Document>:{IMAGE}A cup of coffee.{ASSISTANT}",
        [*image_ids(4), 14623, 374, 419, 5267, 75692, 26818, *image_ids(6), 32, 10525, 315, 10799, 13],
    ),
}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """One adapter per tiny checkpoint for the whole module (loading the tokenizer is the slow part)."""
    cache: dict[str, QwenVLYesNo] = {}

    def get(kind: str) -> QwenVLYesNo:
        if kind not in cache:
            cls = Qwen3VLReranker if kind == "qwen3_vl" else QwenVLYesNo
            cache[kind] = cls(str(artefact(tmp_path_factory, kind)), **PIXELS)
        return cache[kind]

    return get


@pytest.fixture()
def gmr(loaded) -> QwenVLYesNo:
    return loaded("qwen2_5_vl")


@pytest.fixture(scope="module")
def monoqwen(tmp_path_factory) -> MonoQwenVL:
    return MonoQwenVL(str(artefact(tmp_path_factory, "monoqwen_lora")), **PIXELS)


@pytest.mark.parametrize("case", list(GOLDEN))
def test_gmr_prompt_golden(gmr: QwenVLYesNo, case: str) -> None:
    text, content_ids = GOLDEN[case]
    pair = PAIRS[case]
    assert gmr.render(gmr.conversations([pair])) == [text]
    ids = gmr.prepare([pair]).rows[0]
    assert ids == SYSTEM_IDS + USER_IDS + INSTRUCT_IDS + content_ids + TAIL_IDS


def test_monoqwen_prompt_golden(tmp_path_factory, monoqwen: MonoQwenVL) -> None:
    pair = PAIRS["t2i"]
    assert monoqwen.render(monoqwen.conversations([pair])) == [
        (
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            f"{IMAGE}Assert the relevance of the previous image document to the following query, answer True or False. "
            f"The query is: a cat on a sofa{ASSISTANT}"
        )
    ]
    question = [
        8534,
        279,
        40861,
        315,
        279,
        3681,
        2168,
        2197,
        311,
        279,
        2701,
        3239,
        11,
        4226,
        3007,
        476,
        3557,
        13,
        576,
        3239,
        374,
        25,
    ]
    assert monoqwen.prepare([pair]).rows[0] == [
        151644,
        8948,
        198,
        2610,
        525,
        264,
        10950,
        17847,
        13,
        151645,
        198,  # You are a helpful assistant.
        *USER_IDS,
        *image_ids(6),
        *question,
        264,
        8251,
        389,
        264,
        31069,
        *TAIL_IDS,
    ]
    assert monoqwen.token_ids == (2514, 4049)  # "True", "False"
    assert monoqwen.settings()["base_checkpoint"] == str(artefact(tmp_path_factory, "qwen2_vl"))


def full_logits_rule(reranker: QwenVLYesNo, pairs: list[Pair], model=None) -> list[float]:
    """The reference rule on the processor's own inputs (every image processed where it is shown, rows
    left-padded): full-vocabulary logits, last position, softmax over (positive, negative)."""
    conversations = reranker.conversations(pairs)
    images = [part["image"] for conv in conversations for msg in conv for part in msg["content"] if part["type"] == "image"]
    size = {"shortest_edge": reranker.min_pixels, "longest_edge": reranker.max_pixels}
    inputs = reranker.processor(
        text=reranker.render(conversations),
        images=images or None,
        size=size,
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )
    with torch.no_grad():
        logits = (model or reranker.model)(**inputs).logits[:, -1]
    two = logits[:, list(reranker.token_ids)].double()
    return torch.softmax(two, dim=-1)[:, 0].tolist()


@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_scores_follow_the_softmax_rule_and_ignore_batching(loaded, kind: str) -> None:
    reranker = loaded(kind)
    long_doc = Record("d-long", "A long passage about sofas and cats. " * 12, image_bytes("rocket", (150, 90)))
    pairs = [*PAIRS.values(), Pair(INSTRUCTION, Q_BOTH, long_doc), Pair(INSTRUCTION, Q_IMAGE, D_IMAGE)]
    batch = reranker.score(pairs)
    assert all(0.0 <= s <= 1.0 for s in batch)
    assert batch == pytest.approx(full_logits_rule(reranker, pairs), abs=1e-6)
    alone = [reranker.score([p])[0] for p in pairs]
    assert batch == pytest.approx(alone, abs=1e-5)
    assert len(set(batch)) == len(batch)  # the random model does tell the pairs apart


def test_monoqwen_merged_lora_matches_the_peft_model(tmp_path_factory, monoqwen: MonoQwenVL) -> None:
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(artefact(tmp_path_factory, "qwen2_vl")).eval()
    unmerged = PeftModel.from_pretrained(base, artefact(tmp_path_factory, "monoqwen_lora")).eval()
    pairs = [PAIRS["t2i"], Pair(INSTRUCTION, Record("q2", "a hot drink"), Record("d2", None, D_BOTH.image_bytes))]
    scores = monoqwen.score(pairs)
    assert scores == pytest.approx(full_logits_rule(monoqwen, pairs, model=unmerged), abs=1e-5)
    assert [monoqwen.score([p])[0] for p in pairs] == pytest.approx(scores, abs=1e-5)


def test_sides() -> None:
    assert QwenVLYesNo.query_sides == QwenVLYesNo.document_sides == frozenset({"t", "i", "it"})
    mono = object.__new__(MonoQwenVL)
    assert [t.value for t in TaskType if mono.supports(t)] == ["t2i", "t2vd"]


def test_long_document_is_truncated_before_the_template_suffix(gmr: QwenVLYesNo, monkeypatch) -> None:
    pair = Pair(INSTRUCTION, Q_BOTH, Record("d-long", "A long passage about sofas and cats. " * 12, D_BOTH.image_bytes))
    full = gmr.prepare([pair]).rows[0]
    monkeypatch.setattr(gmr, "max_length", len(full) - 10)
    batch = gmr.prepare([pair, PAIRS["t2t"]]).rows
    assert batch[0] == full[: -len(TAIL_IDS) - 10] + TAIL_IDS  # the document text lost its last 10 tokens
    assert batch[1] == gmr.prepare([PAIRS["t2t"]]).rows[0]  # the short pair is untouched
    assert batch[0].count(VISION[1]) == full.count(VISION[1])


def test_images_alone_longer_than_max_length_are_an_error(gmr: QwenVLYesNo, monkeypatch) -> None:
    monkeypatch.setattr(gmr, "max_length", 20)
    with pytest.raises(MRBError, match=r"query 'q-both' with document 'd-both' needs 80 tokens even without its text"):
        gmr.score([PAIRS["it2it"]])


def test_empty_side_and_corrupt_image_name_the_record(gmr: QwenVLYesNo) -> None:
    with pytest.raises(MRBError, match="query 'q-empty' has neither text nor image"):
        gmr.score([Pair(INSTRUCTION, Record("q-empty", ""), D_TEXT)])
    with pytest.raises(MRBError, match="document 'd-corrupt': image does not decode"):
        gmr.score([Pair(INSTRUCTION, Q_TEXT, Record("d-corrupt", None, b"\x89PNG\r\n\x1a\nbroken"))])


def _encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_tiny_and_huge_images_are_resized_within_bounds(gmr: QwenVLYesNo) -> None:
    tiny = Record("d-1x1", None, _encoded(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG"))
    huge = Record("d-20000", None, _encoded(Image.new("L", (20000, 20000), 90), "JPEG"))
    pairs = [Pair(INSTRUCTION, Q_TEXT, tiny), Pair(INSTRUCTION, Q_TEXT, huge)]
    pixels = (gmr.prepare(pairs).grids[:, 1:].prod(dim=1) * 14 * 14).tolist()
    assert all(PIXELS["min_pixels"] <= p <= PIXELS["max_pixels"] for p in pixels)
    assert all(0.0 <= s <= 1.0 for s in gmr.score(pairs))


def test_missing_optional_dependencies_name_the_install(tmp_path_factory, monkeypatch) -> None:
    lora = artefact(tmp_path_factory, "monoqwen_lora")  # built with peft, before it goes
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(MRBError, match="pip install peft"):
        MonoQwenVL(str(lora))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "flash_attn" else object())
    with pytest.raises(MRBError, match="pip install flash-attn"):
        QwenVLYesNo(str(artefact(tmp_path_factory, "qwen2_5_vl")), attn_implementation="flash_attention_2")


def test_cli_runs_a_checkpoint_folder_with_the_yes_no_adapter(tmp_path_factory, tmp_path) -> None:
    """`mrb run --model DIR --adapter qwen-vl-yes-no --tasks mini` end to end (all five modality pairs)."""
    import json

    from mrb.cli import main
    from mrb.results import read_leaderboard
    from mrb.tasks import load_tasks

    folder = str(artefact(tmp_path_factory, "qwen2_5_vl"))
    argv = ["run", "--model", folder, "--adapter", "qwen-vl-yes-no", "--tasks", "mini"]
    argv += ["--min-pixels", "3136", "--max-pixels", "3136", "--output", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    board = read_leaderboard(tmp_path).set_index("task")
    assert sorted(board.index) == sorted(t.name for t in load_tasks("mini"))
    assert list(board["status"]) == ["ok"] * 5
    assert board["value"].between(0, 1).all()
    settings = json.loads(board.at["MiniPhotoQA-IT2T", "settings"])
    assert (settings["checkpoint"], settings["format"], settings["max_pixels"]) == (folder, "gmr", 3136)


def test_images_come_through_the_runners_cache(gmr: QwenVLYesNo) -> None:
    """Each distinct image of a task is decoded once, however many pairs and batches use it."""
    from mrb.data import read_pack
    from mrb.runner import RunOptions, run_task
    from mrb.tasks import load_tasks

    task = load_tasks("MiniPhotos-I2T")[0]
    pack = read_pack(task.pack_path())
    query_images = pack.candidates["query_id"].nunique()  # I→T: images on the query side only
    result = run_task(task, gmr, options=RunOptions(batch_size=16, workers=0))
    assert result.stats.decodes == query_images  # 0 if the adapter bypassed the cache
    assert query_images < result.stats.image_requests <= len(pack.candidates)  # the adapter asks once per batch
