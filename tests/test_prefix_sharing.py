"""Shared-prefix scoring and vision-feature reuse give the scores of the unshared path (fp32, 1e-5), on tiny
random checkpoints of the real architecture classes, under the real runner (budgets, out-of-memory halving)."""

from __future__ import annotations

import copy
import functools
from typing import TypeVar

import pytest
import torch

from mrb.batching import pair_tokens, token_estimator
from mrb.cli import _parser
from mrb.data import Pair, Record, read_pack
from mrb.errors import MRBError
from mrb.rerankers.prefix import Row, common_prefix, plan_rows
from mrb.rerankers.presets import get_reranker
from mrb.rerankers.qwen_vl import VISION_CACHE_MB, MonoQwenVL, Qwen3VLReranker, QwenVLYesNo
from mrb.rerankers.text_llm import Qwen3Reranker
from mrb.rerankers.vision import TensorCache, image_digest
from mrb.runner import RunOptions, run_task
from mrb.tasks import TaskSpec, load_tasks
from tests.test_rerankers_qwen import INSTRUCTION, PIXELS, SYSTEM_IDS, USER_IDS, full_logits_rule
from tests.tiny_models import artefact, image_bytes

MINI = {t.name: t for t in load_tasks("mini")}
INSTRUCT_HEAD = [27, 641, 1235, 26818]  # "<Instruct>:" — what two instructions starting differently share
R = TypeVar("R", QwenVLYesNo, Qwen3Reranker)


def variant(reranker: R, *, share: bool, vision_mb: int) -> R:
    """The same loaded model with other sharing options and fresh counters (loading twice costs seconds)."""
    other = copy.copy(reranker)
    other.prefix_sharing = share
    other.counters = dict.fromkeys(reranker.counters, 0)
    if hasattr(reranker, "vision"):
        other.vision, other.pixels = TensorCache(vision_mb << 20), TensorCache(vision_mb << 20)
    return other


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Per architecture, with fresh counters and caches on each call: the adapter as built by default
    (sharing and reuse on) and its unshared twin (every pair whole, every image through the tower)."""
    loaded = {}

    def get(kind: str):
        if kind not in loaded:
            folder = str(artefact(tmp_path_factory, kind))
            if kind == "qwen3_lm":
                loaded[kind] = Qwen3Reranker(folder)
            else:
                cls = {"qwen3_vl": Qwen3VLReranker, "monoqwen_lora": MonoQwenVL}.get(kind, QwenVLYesNo)
                loaded[kind] = cls(folder, **PIXELS)
            loaded[kind].ready()  # loaded once, before the twins copy it
        base = loaded[kind]
        return variant(base, share=True, vision_mb=VISION_CACHE_MB), variant(base, share=False, vision_mb=0)

    return get


def scores(task: TaskSpec, reranker, **options) -> dict[tuple[str, str], float]:
    """(query, document) → score of a run of `task` through the runner."""
    result = run_task(task, reranker, options=RunOptions(workers=0, **options))
    ranking = result.ranking
    return dict(zip(zip(ranking["query_id"], ranking["doc_id"]), ranking["score"]))


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    diff = max(abs(a[k] - b[k]) for k in a)
    assert diff <= 1e-5, diff
    assert len(set(a.values())) > len(a) // 2  # the random model does tell pairs apart


def shallow(name: str, depth: int) -> TaskSpec:
    """A mini task reranking only the top `depth` candidates of each query."""
    return MINI[name].model_copy(update={"depth": depth})


@functools.cache
def sample(name: str, queries: int = 4, depth: int = 5) -> list[Pair]:
    """The top `depth` candidates of the first `queries` queries of a mini task, in candidate order."""
    task = MINI[name]
    pack = read_pack(task.pack_path())
    top = pack.candidates[pack.candidates["rank"] <= depth]
    top = top[top["query_id"].isin(top["query_id"].unique()[:queries])]
    return [Pair(task.instruction, pack.queries[q], pack.documents[d]) for q, d in zip(top["query_id"], top["doc_id"])]


def batched(reranker, pairs: list[Pair], size: int) -> list[float]:
    return [s for i in range(0, len(pairs), size) for s in reranker.score(pairs[i : i + size])]


def distinct_images(pairs: list[Pair], max_pixels: int) -> int:
    """Distinct decoded images the pairs show (what a large enough vision cache runs through the tower once)."""
    records = {r.id: r for p in pairs for r in (p.query, p.document) if r.has_image}
    return len({image_digest(r.image(max_pixels)) for r in records.values()})


@pytest.mark.parametrize(
    ("kind", "task"),
    [
        ("qwen2_5_vl", "MiniFacts-T2T"),
        ("qwen2_5_vl", "MiniPhotos-T2I"),
        ("qwen2_5_vl", "MiniPhotos-I2T"),
        ("qwen2_5_vl", "MiniPhotos-I2I"),
        ("qwen2_5_vl", "MiniPhotoQA-IT2T"),
        ("qwen3_vl", "MiniPhotoQA-IT2T"),
        ("qwen3_vl", "MiniPhotos-T2I"),
        ("qwen3_lm", "MiniFacts-T2T"),
    ],
)
def test_shared_prefix_scores_equal_the_unshared_path(models, kind: str, task: str) -> None:
    """Every mini task type, in batches of 8 (so queries are cut and images recur across batches)."""
    shared, unshared = models(kind)
    pairs = sample(task)
    got, expected = batched(shared, pairs, 8), batched(unshared, pairs, 8)
    assert got == pytest.approx(expected, abs=1e-5)
    assert len(set(got)) == len(got)  # the random model does tell the pairs apart
    on, off = shared.counters, unshared.counters
    assert on["pairs"] == off["pairs"] == len(pairs)
    assert off["prefix_tokens_saved"] == off["prefix_groups"] == 0
    assert on["prefix_groups"] >= 4  # at least one per query
    assert on["lm_tokens"] == off["lm_tokens"] - on["prefix_tokens_saved"]  # every token counted once, none lost
    if kind != "qwen3_lm":
        assert off["vision_images"] == off["images"]  # unshared: every image shown goes through the tower
        assert on["vision_images"] == distinct_images(pairs, shared.max_pixels)  # shared: each distinct image once
        if MINI[task].type.query_side != "t":
            assert on["images"] < off["images"]  # a query image is shown once per prefix


def test_monoqwen_shares_the_document_its_prompt_shows_first(models) -> None:
    """MonoQwen2-VL's prompt starts with the document image, so the rows of one document share it (T→I batches
    hold a document's queries together)."""
    shared, unshared = models("monoqwen_lora")
    doc = Record("d1", None, image_bytes("coffee", (96, 64)))
    pairs = [Pair(INSTRUCTION, Record(f"q{i}", text), doc) for i, text in enumerate(["a cat", "a hot drink", "coffee"])]
    pairs.append(Pair(INSTRUCTION, Record("q0", "a cat"), Record("d2", None, image_bytes("chelsea", (64, 96)))))
    plan = shared.prepare(pairs).plan
    assert plan.shared == 1 and plan.prefix is not None
    image = shared.processor.image_token_id
    assert plan.prefix.input_ids[0].tolist().count(image) == 6  # the document image ran once, in the prefix
    assert all(image not in row for row in plan.suffix.input_ids.tolist()[:3])
    assert shared.score(pairs) == pytest.approx(unshared.score(pairs), abs=1e-5)


@pytest.mark.parametrize("kind", ["qwen2_5_vl", "qwen3_lm"])
def test_a_group_sharing_only_the_system_prompt_scores_as_unshared(models, kind: str) -> None:
    """One query under three instructions that differ from their first word: the group's common prefix is the
    system prompt and chat header (and `<Instruct>:`), and its rows still score as unshared."""
    shared, unshared = models(kind)
    query = Record("q", "who is this?", image_bytes("astronaut", (64, 64)) if kind != "qwen3_lm" else None)
    docs = [Record(f"d{i}", text) for i, text in enumerate(["A cup of coffee.", "An astronaut.", "A cat."])]
    pairs = [
        Pair(instruction, query, doc)
        for instruction, doc in zip(["Find the caption.", "Retrieve the caption.", "Pick the caption."], docs)
    ]
    prepared = shared.prepare(pairs)
    plan = prepared if kind == "qwen3_lm" else prepared.plan
    assert plan.shared == 1 and plan.prefix.input_ids[0].tolist() == SYSTEM_IDS + USER_IDS + INSTRUCT_HEAD
    assert plan.saved == 2 * len(SYSTEM_IDS + USER_IDS + INSTRUCT_HEAD)
    assert shared.score(pairs) == pytest.approx(unshared.score(pairs), abs=1e-5)


def test_equal_token_ids_showing_different_images_share_no_image(models) -> None:
    """Two rows of one query id whose images differ but have one size: the token ids agree everywhere, the
    shared prefix still stops before the image (rows are compared by image as well as by token)."""
    shared, unshared = models("qwen2_5_vl")
    doc = Record("d", "Cats like sofas.")
    pairs = [Pair(INSTRUCTION, Record("q", "who?", image_bytes(name, (64, 64))), doc) for name in ("astronaut", "coffee")]
    prepared = shared.prepare(pairs)
    assert prepared.rows[0] == prepared.rows[1]
    assert len(prepared.image_keys) == 2
    image = shared.processor.image_token_id
    prefix = prepared.plan.prefix.input_ids[0].tolist()
    assert image not in prefix and prefix[-1] == 151652  # <|vision_start|>, then the images differ
    assert prepared.plan.saved == len(prefix)
    got = shared.score(pairs)
    assert got == pytest.approx(unshared.score(pairs), abs=1e-5)
    assert got == pytest.approx(full_logits_rule(shared, pairs), abs=1e-5)
    assert abs(got[0] - got[1]) > 1e-4


def test_truncated_rows_are_the_unshared_rows_and_score_alike(models, monkeypatch) -> None:
    shared, unshared = models("qwen2_5_vl")
    query = Record("q", "who is this?", image_bytes("astronaut", (64, 64)))
    long_docs = [Record(f"d{i}", f"Passage {i} about sofas and cats. " * 12) for i in range(3)]
    pairs = [Pair(INSTRUCTION, query, d) for d in long_docs]
    full = unshared.prepare(pairs).rows
    tail = 5  # <|im_end|>\n<|im_start|>assistant\n
    for adapter in (shared, unshared):
        monkeypatch.setattr(adapter, "max_length", len(full[0]) - 10)
    prepared = shared.prepare(pairs)
    assert prepared.rows == [r[: -tail - 10] + r[-tail:] for r in full]  # each document lost its last 10 tokens
    assert prepared.plan.shared == 1
    assert shared.score(pairs) == pytest.approx(unshared.score(pairs), abs=1e-5)


@pytest.mark.parametrize("kind", ["monoqwen_lora", "qwen2_5_vl", "qwen3_vl"])  # MonoQwen: a Qwen2-VL
def test_each_distinct_image_is_processed_once_into_the_processors_rows(models, kind: str) -> None:
    """The batch processes each distinct image once, yet its rows, grids and pixels are the processor's own."""
    shared, _ = models(kind)
    q = Record("q", "who is this?", image_bytes("astronaut", (64, 64)))
    d = Record("d", "A cup of coffee.", image_bytes("coffee", (96, 64)))
    pairs = [Pair(INSTRUCTION, q, d), Pair(INSTRUCTION, q, Record("d2", "Text only.")), Pair(INSTRUCTION, Record("q2", "tea"), d)]
    order = [0, 1, 0, 1]  # the distinct images shown in prompt order: q, d, q, d
    if kind == "monoqwen_lora":  # text queries and image documents only
        pairs = [
            Pair(INSTRUCTION, Record("q1", "tea"), d),
            Pair(INSTRUCTION, Record("q2", "a cup"), d),
            Pair(INSTRUCTION, Record("q1", "tea"), q),
        ]
        order = [0, 0, 1]
    prepared = shared.prepare(pairs)
    conversations = shared.conversations(pairs)
    shown = [part["image"] for c in conversations for m in c for part in m["content"] if part["type"] == "image"]
    size = {"shortest_edge": shared.min_pixels, "longest_edge": shared.max_pixels}
    reference = shared.processor(text=shared.render(conversations), images=shown, size=size)
    assert prepared.rows == [list(r) for r in reference["input_ids"]]
    assert len(prepared.image_keys) == 2 and len(shown) == len(order)
    assert torch.equal(prepared.grids[order], torch.as_tensor(reference["image_grid_thw"]))
    assert torch.equal(torch.cat([prepared.pixel_values[i] for i in order]), torch.as_tensor(reference["pixel_values"]))


def test_a_budget_cut_inside_a_querys_candidates_scores_as_unshared(models) -> None:
    shared, unshared = models("qwen2_5_vl")
    task = shallow("MiniPhotoQA-IT2T", 7)
    pairs = sample("MiniPhotoQA-IT2T", queries=16, depth=7)
    budget = 5 * max(pair_tokens(pairs, token_estimator(shared.max_pixels)))  # ~5 pairs a batch: queries of 7 are cut
    assert_same(scores(task, shared, max_batch_tokens=budget), scores(task, unshared, max_batch_tokens=budget))
    assert shared.counters["pairs"] == len(pairs)
    assert shared.counters["prefix_groups"] > 16  # a query's candidates were split, and each piece shared its prefix


def test_out_of_memory_halving_with_sharing_scores_as_unshared(models, monkeypatch) -> None:
    shared, unshared = models("qwen2_5_vl")
    body = shared.model.base_model  # the loaded model both twins share
    real = body.forward

    def bounded(*args, **kwargs):
        if kwargs["input_ids"].shape[0] > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    task = shallow("MiniPhotos-I2T", 4)
    expected = scores(task, unshared, batch_size=16)
    monkeypatch.setattr(body, "forward", bounded)
    pack = read_pack(task.pack_path())
    first = pack.candidates.head(8)  # eight candidates of one query: a suffix pass of 8 rows, over the bound
    batch = [Pair(task.instruction, pack.queries[q], pack.documents[d]) for q, d in zip(first["query_id"], first["doc_id"])]
    with pytest.raises(torch.cuda.OutOfMemoryError):
        shared.score(batch)
    assert len(shared.vision) == 0 and shared.vision.size == 0  # cached features freed for the smaller retry
    result = run_task(task, shared, options=RunOptions(batch_size=16, workers=0))
    assert result.stats.oom_retries == 2  # 16 → 8 → 4
    got = dict(zip(zip(result.ranking["query_id"], result.ranking["doc_id"]), result.ranking["score"]))
    assert_same(got, expected)


def test_vision_features_recur_across_batches_from_the_cache(models) -> None:
    """T→I in batches of 4: a document image shown by several queries goes through the tower once."""
    shared, _ = models("qwen2_5_vl")
    reuse_only = variant(shared, share=False, vision_mb=64)
    neither = variant(shared, share=False, vision_mb=0)
    task = shallow("MiniPhotos-T2I", 4)
    assert_same(scores(task, reuse_only, batch_size=4), scores(task, neither, batch_size=4))
    distinct = distinct_images(sample("MiniPhotos-T2I", queries=16, depth=4), shared.max_pixels)
    assert reuse_only.counters["vision_images"] == distinct < neither.counters["vision_images"] == 16 * 4
    assert reuse_only.counters["vision_cache_hits"] > 0
    assert neither.counters["vision_patches"] > reuse_only.counters["vision_patches"]
    assert reuse_only.counters["images_processed"] == distinct < neither.counters["images_processed"]  # pixels kept too


def test_feature_cache_is_a_bounded_lru() -> None:
    computed: list[list[str]] = []

    def tower(keys: list[str]):
        def compute(at: list[int]):
            computed.append([keys[j] for j in at])
            return [(torch.full((4, 8), float(ord(keys[j]))), (torch.zeros(4, 8),)) for j in at]

        return compute

    one = 2 * 4 * 8 * 4  # bytes of one image's features (merged + one DeepStack layer, fp32)
    cache = TensorCache(2 * one)
    keys = ["a", "b", "a"]
    got, hits = cache.get(keys, tower(keys))
    assert computed == [["a", "b"]] and hits == 0 and got[0] is got[2]
    keys = ["c", "a"]
    got, hits = cache.get(keys, tower(keys))  # c evicts b (a was used more recently)
    assert computed[-1] == ["c"] and hits == 1 and cache.size == 2 * one and len(cache) == 2
    keys = ["b"]
    cache.get(keys, tower(keys))
    assert computed[-1] == ["b"] and cache.size <= 2 * one
    assert float(got[1][0][0, 0]) == ord("a")
    off = TensorCache(0)
    keys = ["a", "a"]
    off.get(keys, tower(keys))
    assert computed[-1] == ["a", "a"] and len(off) == 0  # no reuse: every occurrence through the tower


def test_sharing_options_are_not_part_of_the_identity(tmp_path_factory, models) -> None:
    """Shared and unshared scores agree to float rounding, so they share one identity (and score cache)."""
    from mrb.identity import identify

    folder = str(artefact(tmp_path_factory, "qwen2_5_vl"))
    off = get_reranker(folder, adapter="qwen-vl-yes-no", prefix_sharing=False, vision_cache_mb=0, **PIXELS)
    on, _ = models("qwen2_5_vl")  # built with the defaults
    on.name = off.name
    assert (off.prefix_sharing, on.prefix_sharing, off.vision.max_bytes, on.vision.max_bytes) == (False, True, 0, 512 << 20)
    assert off.settings() == on.settings() and identify(off).digest == identify(on).digest
    with pytest.raises(MRBError, match="vision_cache_mb must be 0 or more"):
        QwenVLYesNo(folder, vision_cache_mb=-1)
    args = _parser().parse_args(["run", "--model", folder, "--adapter", "qwen-vl-yes-no", "--no-prefix-sharing"])
    assert args.prefix_sharing is False
    assert _parser().parse_args(["run", "--model", folder]).prefix_sharing is None  # not passed unless asked


def test_common_prefix_leaves_each_row_its_last_token() -> None:
    assert common_prefix([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert common_prefix([[1, 2, 3], [1, 2, 3]]) == 2
    assert common_prefix([[1, 2, 3]]) == 2
    assert common_prefix([[7], [7, 8]]) == 0
    assert common_prefix([[(1, "img-a"), 2], [(1, "img-b"), 2]]) == 0
    rows = [
        Row([5, 6, 7, 8], torch.arange(4).view(1, -1), "g", images=((1, 3, 0),)),
        Row([5, 6, 7, 9], torch.arange(4).view(1, -1), "g", images=((1, 3, 0),)),
        Row([5, 6, 1, 2], torch.arange(4).view(1, -1), "g", images=((1, 3, 0),)),
    ]
    plan = plan_rows(rows, 0, share=True)
    assert plan.prefix.input_ids.tolist() == [[5]]  # the common [5, 6] would split the image at 1 … 2
    assert plan.suffix.images == [0, 0, 0] and plan.prefix.images == []
    assert plan.suffix.position_ids.tolist() == [[1, 2, 3]] * 3 and plan.saved == 2
    apart = [Row(ids, torch.arange(3).view(1, -1), "g") for ids in ([1, 2, 3], [7, 8, 9])]
    assert plan_rows(apart, 0, share=True).prefix is None  # one group, no common token: whole rows, one pass
    alike = [Row(ids, torch.arange(3).view(1, -1), "h") for ids in ([4, 5, 6], [4, 5, 9])]
    mixed = plan_rows([*apart, *alike], 0, share=True)  # the first group's prefix row is all padding
    assert mixed.prefix.input_ids.tolist() == [[0, 0], [4, 5]] and mixed.prefix.attention_mask.tolist() == [[0, 0], [1, 1]]
    assert (mixed.shared, mixed.saved, mixed.row_prefix.tolist()) == (1, 2, [0, 0, 1, 1])


def test_the_runner_keeps_a_querys_candidates_together_and_records_the_adapters_counters(models) -> None:
    """I→T: the plan holds each query's candidates in one run of batches, so each query's prefix is run once per
    batch it spans (not once per length bucket), and the adapter's counters reach the task's statistics."""
    shared, _ = models("qwen2_5_vl")
    task = MINI["MiniPhotos-I2T"]
    result = run_task(task, shared, options=RunOptions(batch_size=32, workers=0))
    assert result.stats is not None
    counted = result.stats.model
    # 16 queries × 20 candidates in 10 batches of 32: a prefix per query, plus one per batch boundary that cuts a query
    assert counted["pairs"] == 320 and 16 <= counted["prefix_groups"] <= 16 + 9
    assert counted["prefix_tokens_saved"] > 0 and counted["lm_tokens"] < 320 * 60
    assert "prefix tokens shared" in result.stats.summary()
