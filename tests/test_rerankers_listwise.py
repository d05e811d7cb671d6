"""The listwise chat adapters on tiny random checkpoints: each format's prompt pinned, the answer's parsing, greedy
decoding of exactly the permutation's tokens, FIRST's label logits, the presets, and a run of mini end to end."""

from __future__ import annotations

import json

import pytest
import torch

import mrb
from mrb.cli import main
from mrb.data import Record
from mrb.errors import MRBError
from mrb.rerankers import PRESETS, get_reranker
from mrb.rerankers.base import Window
from mrb.rerankers.listwise_chat import ChatListwise, QwenVLListwise, parse_ranking
from mrb.results import read_leaderboard
from tests.tiny_models import PIXELS, artefact, image_bytes

RANK_LLM_CLOSING = (
    "Rank the 3 passages above based on their relevance to the search query. All the passages should be included and listed "
    "using identifiers, in descending order of relevance. The output format should be [] > [], e.g., {example}, Answer "
    "concisely and directly and only respond with the ranking results, do not say any word or explain."
)
# rank_llm cleans passages (whitespace collapsed, cut to max_passage_words, [n] → (n)) and the query ([n] → (n) only).
TEXT_WINDOW = Window(
    "Find the answer.",
    Record("q", "what do  cats [1] eat?"),
    [Record("d1", "Cats eat fish, see [2] and\n more words here."), Record("d2", "Dogs bark."), Record("d3", "  Fish   swim.  ")],
)
# Zephyr's chat template as the tiny checkpoint renders it (its tokenizer's eos token is Qwen's <|im_end|>, Zephyr's </s>).
RANK_ZEPHYR_PROMPT = (
    "<|system|>\nYou are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query<|im_end|>\n"
    "<|user|>\nI will provide you with 3 passages, each indicated by a numerical identifier []. Rank the passages based on their "
    "relevance to the search query: what do  cats (1) eat?.\n[1] Cats eat fish, see (2)\n[2] Dogs bark.\n[3] Fish swim.\n"
    "Search Query: what do  cats (1) eat?.\n" + RANK_LLM_CLOSING.format(example="[2] > [1]") + "<|im_end|>\n<|assistant|>\n"
)


@pytest.fixture(scope="module")
def zephyr(tmp_path_factory):
    return str(artefact(tmp_path_factory, "zephyr"))


@pytest.fixture(scope="module")
def qwen3_5(tmp_path_factory):
    return str(artefact(tmp_path_factory, "qwen3_5_vl"))


@pytest.fixture(scope="module")
def rank_zephyr(zephyr):
    model = ChatListwise(zephyr, window=3, stride=1, max_passage_words=5)
    model.ready()  # the tests reach into the loaded model
    return model


@pytest.fixture(scope="module")
def first(zephyr):
    model = ChatListwise(zephyr, format="rank-zephyr-alpha", window=3, stride=1, max_passage_words=5, first_token_logits=True)
    model.ready()
    return model


def test_rank_zephyr_prompt_is_rank_llms_template(rank_zephyr, first):
    assert rank_zephyr.prompt(TEXT_WINDOW) == (RANK_ZEPHYR_PROMPT, [])
    assert first.prompt(TEXT_WINDOW)[0] == (
        RANK_ZEPHYR_PROMPT.replace("a numerical identifier", "an alphabetical identifier")
        .replace("[1] Cats", "[A] Cats")
        .replace("[2] Dogs", "[B] Dogs")
        .replace("[3] Fish", "[C] Fish")
        .replace("e.g., [2] > [1]", "e.g., [B] > [A]")
    )


def test_rank_zephyr_repairs_texts_with_ftfy_as_rank_llm_does(rank_zephyr, monkeypatch):
    window = Window(
        "",
        Record("q", "what’s in a café?"),
        [Record("d1", "cafÃ© “quoted” ﬁne ＡＢＣ [2] and more"), Record("d2", "Dogs bark."), Record("d3", "Fish swim.")],
    )
    prompt, _ = rank_zephyr.prompt(window)
    # mojibake repaired, quotes uncurled, the ligature and the full-width letters unfolded, then cut to 5 words
    assert 'search query: what\'s in a café?.\n[1] café "quoted" fine ABC (2)\n[2] Dogs bark.\n' in prompt
    assert "Search Query: what's in a café?.\n" in prompt
    # the rendered prompt too: a chat template's own text goes through ftfy, as rank_llm's create_prompt does
    monkeypatch.setattr(rank_zephyr.tokenizer, "chat_template", "{{ '“' }}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert rank_zephyr.prompt(TEXT_WINDOW)[0].startswith('"You are RankLLM')


def test_rank_zephyr_without_ftfy_names_the_extra(zephyr, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ftfy", None)  # import ftfy now raises ImportError
    with pytest.raises(MRBError) as err:
        ChatListwise(zephyr, window=3, stride=1)
    assert str(err.value) == "the rank-zephyr formats clean texts as rank_llm does, with ftfy: pip install 'mrb[listwise]'"
    ChatListwise(zephyr, format="lighton", window=3, stride=1)  # MTEB's LightOn wrapper does not clean: no ftfy needed


def test_lighton_prompts_are_mtebs_wrapper(qwen3_5):
    model = QwenVLListwise(qwen3_5, format="lighton", window=3, stride=1, think_block=True, min_pixels=4096, max_pixels=4096)
    query = Record("q", "what do cats eat?")
    passages = Window("", query, [Record("d1", "Cats eat fish [2]."), Record("d3", "Fish swim.")])
    assert model.prompt(passages) == (
        "<|im_start|>user\nQuery: what do cats eat?\n\nRank these passages from most to least relevant:\n[1]: Cats eat fish [2].\n"
        "[2]: Fish swim.\n\nRanking:<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
        [],
    )
    page = Record("d2", None, image_bytes("coffee", (64, 64)))
    mixed = Window("", query, [Record("d1", "Cats eat fish [2]."), page, Record("d3", "Fish swim.")])
    prompt, images = model.prompt(mixed)
    # through the chat template (the tiny checkpoint's, Qwen2-VL's, adds its default system message)
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nQuery: what do cats eat?\n\n"
        "Rank these documents from most to least relevant:\n[1]: Cats eat fish [2].\n[2]: <|vision_start|><|image_pad|>"
        "<|vision_end|>\n[3]: Fish swim.\n\nRanking:<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert [image.size for image in images] == [(64, 64)]
    assert (model.query_sides, model.document_sides) == ({"t"}, {"t", "i"})  # a text query; a passage or a page image


def test_rank_zephyr_on_qwen_vl_shows_images_as_image_parts(qwen3_5):
    model = QwenVLListwise(qwen3_5, window=3, stride=1, **PIXELS)
    window = Window(
        "",
        Record("q", None, image_bytes("astronaut", (64, 64))),
        [
            Record("d1", "Cats eat fish."),
            Record("d2", "a cup", image_bytes("coffee", (64, 64))),
            Record("d3", None, image_bytes("chelsea", (64, 64))),
        ],
    )
    prompt, images = model.prompt(window)
    assert prompt == (
        "<|im_start|>system\nYou are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query"
        "<|im_end|>\n<|im_start|>user\nI will provide you with 3 passages, each indicated by a numerical identifier []. Rank the "
        "passages based on their relevance to the search query: <|vision_start|><|image_pad|><|vision_end|>.\n"
        "[1] Cats eat fish.\n[2] <|vision_start|><|image_pad|><|vision_end|>a cup\n[3] <|vision_start|><|image_pad|><|vision_end|>\n"
        + RANK_LLM_CLOSING.format(example="[2] > [1]")  # no `Search Query:` line: the query has no text
        + "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert len(images) == 3


def test_answers_are_read_as_rank_llm_reads_them_or_strictly():
    assert parse_ranking("[2] > [3] > [1]", 3) == [1, 2, 0]
    assert parse_ranking("I rank [2] first, then 2 and [9] > [1]", 3) == [1, 1, 8, 0]  # the runner repairs what is left
    assert parse_ranking("<think>[1] > [2]</think>\n[3] > [1]", 3) == [2, 0]
    assert parse_ranking("[B] > [A] > [C]", 3, alpha=True) == [1, 0, 2]
    assert parse_ranking("no ranking", 3) == []
    assert parse_ranking("Ranking: [2] > [1] > [3] etc", 3, strict=True) == [1, 0, 2]
    assert parse_ranking("[2] > [1]", 3, strict=True) == []  # not all three
    assert parse_ranking("[2] > [2] > [3]", 3, strict=True) == []  # not a permutation


def test_generation_is_greedy_and_exactly_as_long_as_the_permutation(rank_zephyr, zephyr):
    model = rank_zephyr
    configs = []
    generate = model.model.generate

    def spy(**kwargs):
        configs.append(kwargs["generation_config"])
        return generate(**kwargs)

    model.model.generate = spy
    try:
        orders = model.rank_windows([TEXT_WINDOW, TEXT_WINDOW])
    finally:
        del model.model.generate
    assert len(orders) == 2 and all(all(isinstance(i, int) for i in order) for order in orders)
    answer_tokens = len(model.tokenizer.encode("[1] > [2] > [3]", add_special_tokens=False))
    [config] = configs  # one batch for the two windows
    assert (config.do_sample, config.max_new_tokens, config.min_new_tokens) == (False, answer_tokens, answer_tokens)
    capped = ChatListwise(zephyr, window=3, stride=1, max_new_tokens=30)
    capped.ready()
    capped.model.generate = spy
    capped.rank_windows([TEXT_WINDOW])
    assert (configs[-1].max_new_tokens, configs[-1].min_new_tokens) == (30, 0)


def test_passages_are_cut_by_words_until_the_prompt_fits_max_length(zephyr):
    long = Window("", Record("q", "cats"), [Record(f"d{i}", " ".join(f"word{j}" for j in range(200))) for i in range(3)])
    model = ChatListwise(zephyr, window=3, stride=1, max_length=600)
    prompt, _ = model.prompt(long)
    answer = len(model.tokenizer.encode("[1] > [2] > [3]", add_special_tokens=False))
    assert len(model.tokenizer.encode(prompt)) <= 600 - answer
    kept = [line.split()[1:] for line in prompt.splitlines() if line.startswith("[") and line[1] in "123"]
    assert len({len(k) for k in kept}) == 1 and 0 < len(kept[0]) < 200 and kept[0][:2] == ["word0", "word1"]
    wordy = Window("", Record("q", " ".join(["cats"] * 600)), long.candidates)  # a query is never cut
    with pytest.raises(
        MRBError, match=r"^the window of query 'q' needs \d+ prompt tokens even with empty passages, more than max_length 600"
    ):
        model.prompt(wordy)


def test_first_token_logits_order_the_labels_as_the_model_scores_them_after_the_opening_bracket(first, zephyr):
    model = first
    [order] = model.rank_windows([TEXT_WINDOW])
    prompt, _ = model.prompt(TEXT_WINDOW)
    ids = model.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        first = model.model(input_ids=ids).logits[0, -1].argmax()  # the greedy first token of the answer
        logits = model.model(input_ids=torch.cat([ids, first.view(1, 1)], dim=1)).logits[0, -1]
    labels = [model.tokenizer.convert_tokens_to_ids(c) for c in "ABC"]
    assert order == sorted(range(3), key=lambda j: -logits[labels[j]].item())
    with pytest.raises(MRBError, match="labels candidates A … Z: a window holds at most 26, got 30"):
        ChatListwise(zephyr, format="rank-zephyr-alpha", window=30, stride=10)


LISTWISE_PRESETS = {"rank-zephyr-7b": "zephyr", "first-mistral": "zephyr", "lighton-rerank-lw-0.8b": "qwen3_5_vl"}


def test_listwise_presets_load_a_tiny_checkpoint_and_rank_a_window(tmp_path_factory):
    lighton = [PRESETS[f"lighton-rerank-lw-{size}"] for size in ("0.8b", "2b", "4b")]
    assert [p.options["think_block"] for p in lighton] == [False, False, True]  # the 4B's Qwen3.5 backbone thinks by default
    assert [{**p.options, "think_block": None} for p in lighton[1:]] == [{**lighton[0].options, "think_block": None}] * 2
    assert lighton[1].revision == "4629d733e8381a7d2c8cfba17378ce3ceaf0edd4"  # MTEB's pin
    for name, kind in LISTWISE_PRESETS.items():
        preset = PRESETS[name]
        model = get_reranker(name, checkpoint=str(artefact(tmp_path_factory, kind)))
        assert model.name == name and preset.unverified and preset.source
        settings = model.settings()
        assert {k: settings[k] for k in preset.options} == preset.options
        assert settings["max_length"] == preset.max_length
        candidates = [Record(f"d{i}", f"passage {i}") for i in range(model.window)]
        [order] = model.rank_windows([Window("", Record("q", "a query"), candidates)])
        assert all(isinstance(i, int) for i in order)


def test_a_tiny_qwen_vl_chat_model_runs_mini_end_to_end_through_the_generation_adapter(tmp_path_factory, tmp_path):
    checkpoint = str(artefact(tmp_path_factory, "qwen2_vl"))
    options = {"window": 20, "stride": 10, "max_new_tokens": 4, "batch_size": 16, **PIXELS}
    board = mrb.evaluate(checkpoint, "mini", adapter="listwise-qwen-vl", output_dir=tmp_path, quiet=True, **options)
    assert board["status"].tolist() == ["ok"] * 5
    provenance = [json.loads(p) for p in board["provenance"]]
    assert [p["windows"] for p in provenance] == [16, 16, 16, 16, 15]  # one window per query (20 candidates)
    for p in provenance:  # the random model writes no label: every window keeps its order, and says so
        assert p["unparsable_windows"] + p["repaired_windows"] <= p["windows"]
    unchanged = [p["unparsable_windows"] == p["windows"] for p in provenance]
    assert (board["value"] == board["first_stage_value"])[unchanged].all()
    assert json.loads(board["settings"].iloc[0])["format"] == "rank-zephyr"


def test_cli_runs_a_listwise_checkpoint_and_refuses_bad_window_options(zephyr, tmp_path, capsys):
    out = tmp_path / "out"
    command = [
        "run",
        "--model",
        zephyr,
        "--adapter",
        "listwise-chat",
        "--tasks",
        "MiniFacts-T2T",
        "--output",
        str(out),
        "--quiet",
    ]
    assert main([*command, "--window", "4", "--stride", "2", "--first-token-logits", "--prompt-format", "rank-zephyr-alpha"]) == 0
    settings = json.loads(read_leaderboard(out)["settings"].iloc[0])
    assert (settings["window"], settings["stride"], settings["first_token_logits"], settings["format"]) == (
        4,
        2,
        True,
        "rank-zephyr-alpha",
    )
    capsys.readouterr()
    for extra, message in (
        (
            ["--window", "4", "--stride", "9"],
            "a listwise window needs window >= 2 and 1 <= stride <= window, got window 4, stride 9",
        ),
        (["--prompt-format", "rankgpt"], "unknown listwise format 'rankgpt'; use one of rank-zephyr, rank-zephyr-alpha, lighton"),
    ):
        assert main([*command, *extra]) == 2
        assert capsys.readouterr().err == f"mrb: error: {message}\n"
    assert main(["run", "--model", "random", "--tasks", "MiniFacts-T2T", "--output", str(out), "--window", "4", "--quiet"]) == 2
    assert capsys.readouterr().err == "mrb: error: RandomScores does not take option(s) window; it takes: seed\n"
