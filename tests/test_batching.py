"""Length-aware batches, batch invariance, decoded-image sharing and out-of-memory back-off."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import mrb
from mrb.batching import (
    ImageCache,
    length_bucket,
    pair_tokens,
    plan_batches,
    token_estimator,
)
from mrb.data import Pair, Record, read_pack
from mrb.errors import MRBError
from mrb.rerankers.base import Reranker
from mrb.runner import RunOptions, run_task
from mrb.tasks import load_tasks
from tests.packs import small_text_task, write_task
from tests.scale_helpers import Recording, jpeg_bytes, pair_score

MINI = {t.name: t for t in load_tasks("mini")}


def test_plan_is_longest_first_under_the_budget_with_ties_in_order():
    lengths = [5, 9, 5, 30, 9, 1]
    assert plan_batches(lengths, 32, None) == [[3, 1, 4, 0, 2, 5]]
    assert plan_batches(lengths, 2, None) == [[3, 1], [4, 0], [2, 5]]
    # 20 tokens: 9+9 fits (2 × 9) but not a third (27); 5+5+1 pads to 15; the 30-token pair goes alone
    assert plan_batches(lengths, 32, 20) == [[3], [1, 4], [0, 2, 5]]
    assert plan_batches([], 4, 10) == []
    # a group's pairs go together, groups in the bucket of their longest pair, in order of first appearance
    assert plan_batches([40, 39, 40, 39], 2, None, groups=["b", "a", "a", "b"]) == [[0, 3], [1, 2]]
    assert plan_batches([10, 300, 20, 310], 4, None, groups=["x", "y", "x", "y"]) == [[1, 3, 2, 0]]  # 300, 310: one bucket
    assert [length_bucket(n) for n in (1, 15, 16, 17, 300, 1000, 1025)] == [1, 15, 16, 18, 320, 1024, 1152]


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 3000), max_size=60),
    batch_size=st.integers(1, 9),
    budget=st.none() | st.integers(1, 20000),
    groups=st.booleans(),
)
def test_any_plan_covers_each_pair_once_longest_bucket_first_within_limits(lengths, batch_size, budget, groups):
    group_ids = [str(i % 4) for i in range(len(lengths))] if groups else None
    plan = plan_batches(lengths, batch_size, budget, group_ids)
    flat = [i for batch in plan for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert_grouped_longest_first([length_bucket(lengths[i]) for i in flat], [group_ids[i] for i in flat] if groups else None)
    for batch in plan:
        assert 1 <= len(batch) <= batch_size
        assert budget is None or len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= budget


def assert_grouped_longest_first(buckets: list[int], groups: list | None) -> None:
    """Longest bucket first overall without groups; with groups, each group in one run, runs ordered by their
    longest bucket, and longest first within each run."""
    if groups is None:
        assert buckets == sorted(buckets, reverse=True)
        return
    runs: list[tuple[object, list[int]]] = []
    for group, bucket in zip(groups, buckets):
        if runs and runs[-1][0] == group:
            runs[-1][1].append(bucket)
        else:
            runs.append((group, [bucket]))
    assert len(runs) == len(set(groups)), "a group's pairs are not together"
    assert all(b == sorted(b, reverse=True) for _, b in runs)
    tops = [b[0] for _, b in runs]
    assert tops == sorted(tops, reverse=True)


def test_token_estimate_counts_text_and_image_patches_from_the_header_only():
    image = Record("a", "x" * 9, jpeg_bytes((280, 140)))  # 10 × 5 patches of 28 pixels
    estimate = token_estimator(None)
    assert estimate(image) == 3 + 50
    assert token_estimator(280 * 70)(image) == 3 + 25  # scaled down to max_pixels first
    pair = Pair("abcd", Record("q", "12345678"), image)
    assert pair_tokens([pair], estimate) == [1 + 2 + 53]


def run_recording(task, reranker, **options):
    return run_task(task, reranker, options=RunOptions(**options))


@pytest.mark.parametrize(
    "options", [{"batch_size": 1}, {"batch_size": 7, "workers": 0}, {"batch_size": 64, "max_batch_tokens": 300, "workers": 3}]
)
def test_order_is_restored_whatever_the_batches(options):
    task = MINI["MiniPhotoQA-IT2T"]
    reference = run_recording(task, Recording(), batch_size=32)
    reranker = Recording()
    result = run_recording(task, reranker, **options)
    assert result.ranking.equals(reference.ranking)
    scored = {(q, d): s for q, d, s in zip(result.ranking["query_id"], result.ranking["doc_id"], result.ranking["score"])}
    pack = read_pack(task.pack_path())
    assert scored == {
        (q, d): pair_score(Pair("", Record(q), Record(d))) for q, d in zip(pack.candidates["query_id"], pack.candidates["doc_id"])
    }
    # longest first, and within the budget unless a pair is alone
    estimate = token_estimator(None)
    lengths = {
        (q, d): n
        for (q, d), n in zip(
            scored, pair_tokens([Pair(task.instruction, pack.queries[q], pack.documents[d]) for q, d in scored], estimate)
        )
    }
    flat = [k for batch in reranker.batches for k in batch]
    assert_grouped_longest_first([length_bucket(lengths[k]) for k in flat], [q for q, _ in flat])  # IT→T: by query
    budget = options.get("max_batch_tokens")
    assert all(len(b) <= options["batch_size"] for b in reranker.batches)
    if budget:
        assert all(len(b) == 1 or len(b) * max(lengths[k] for k in b) <= budget for b in reranker.batches)


def test_minilm_scores_do_not_depend_on_batch_size_or_order(tmp_path):
    small_text_task(tmp_path)
    [task] = load_tasks("all", task_dirs=[tmp_path])
    minilm = mrb.get_reranker("minilm")
    one = run_task(task, minilm, options=RunOptions(batch_size=1)).ranking
    many = run_task(task, minilm, options=RunOptions(batch_size=4, max_batch_tokens=40)).ranking
    merged = one.merge(many, on=["query_id", "doc_id"])
    assert len(merged) == 6
    assert merged["score_x"].to_numpy() == pytest.approx(merged["score_y"].to_numpy(), abs=1e-6)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("name", ["MiniPhotos-T2I", "MiniPhotos-I2T", "MiniPhotos-I2I"])
def test_each_distinct_image_is_decoded_once_per_task(name, workers):
    task = MINI[name]
    pack = read_pack(task.pack_path())
    c = pack.candidates
    distinct = sum(pack.queries[q].has_image for q in c["query_id"].unique()) + sum(
        pack.documents[d].has_image for d in c["doc_id"].unique()
    )
    requests = sum(pack.queries[q].has_image for q in c["query_id"]) + sum(pack.documents[d].has_image for d in c["doc_id"])
    stats = run_recording(task, Recording(), batch_size=16, workers=workers).stats
    assert (stats.decodes, stats.image_requests) == (distinct, requests)
    assert (stats.prep_seconds > 0) == (workers > 0)  # the worker threads decoded ahead


def test_image_cache_is_bounded_by_decoded_bytes_and_drops_an_image_after_its_last_use():
    records = [Record(str(i), None, jpeg_bytes((100, 100))) for i in range(4)]  # 30 000 bytes each decoded
    images = ImageCache(max_bytes=70_000)
    for r in records + records[-2:]:
        r.with_source(images.side("d")).image()
    assert (images.decodes, images.requests) == (4, 6)  # the two most recent stay
    records[0].with_source(images.side("d")).image()
    assert images.decodes == 5
    images = ImageCache(max_bytes=10**9)
    images.expect(Counter({("d", "0"): 2, ("d", "1"): 1}))
    images.warm("d", records[0])
    for r in (records[0], records[1], records[0]):
        r.with_source(images.side("d")).image()
    assert (images.decodes, images.requests) == (2, 3)
    records[1].with_source(images.side("d")).image()
    records[0].with_source(images.side("d")).image()
    assert images.decodes == 4  # each went after its last expected use


class OutOfMemoryAbove(Recording):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.sizes = limit, []

    def score(self, pairs):
        self.sizes.append(len(pairs))
        if len(pairs) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().score(pairs)


def test_out_of_memory_halves_the_batch_for_the_rest_of_the_task():
    task = MINI["MiniFacts-T2T"]
    reranker = OutOfMemoryAbove(limit=5)
    result = run_recording(task, reranker, batch_size=16)
    assert reranker.sizes[:4] == [16, 8, 4, 4] and set(reranker.sizes[3:]) == {4}
    assert (result.stats.oom_retries, result.stats.scored, result.stats.batches) == (2, 320, 80)
    assert result.ranking.equals(run_recording(task, Recording(), batch_size=16).ranking)


def test_out_of_memory_on_one_pair_stops_with_a_clear_message(tmp_path):
    small_text_task(tmp_path)
    [task] = load_tasks("all", task_dirs=[tmp_path])
    with pytest.raises(MRBError) as err:
        run_recording(task, OutOfMemoryAbove(limit=0), batch_size=4)
    assert str(err.value) == (
        "task Small-T2T: out of memory on a single pair (query 'q1', document 'd2'); lower max_pixels or max_length"
    )


class Preparing(Reranker):
    """`Recording` split into `prepare` (decodes the images) and `forward` (scores), noting the thread of
    each call; the first `forward` waits (up to `wait` seconds) until a second batch is being prepared.
    Its first `failures` prepares raise; a forward of more than `oom_above` pairs runs out of memory."""

    name = "preparing"

    def __init__(self, failures: int = 0, oom_above: int | None = None, wait: float = 10) -> None:
        self.failures, self.oom_above, self.wait = failures, oom_above, wait
        self.prepare_threads: list[str] = []
        self.prepared_pairs = 0
        self.forward_sizes: list[int] = []
        self.main_thread_forwards = True
        self.second_batch_started = threading.Event()
        self.prepared_ahead = False

    def prepare(self, pairs):
        self.prepare_threads.append(threading.current_thread().name)
        if len(self.prepare_threads) == 2:
            self.second_batch_started.set()
        if self.failures:
            self.failures -= 1
            raise RuntimeError("flaky preprocessing")
        self.prepared_pairs += len(pairs)
        for p in pairs:
            p.query.image()
            p.document.image()
        return list(pairs)

    def forward(self, prepared):
        self.main_thread_forwards &= threading.current_thread() is threading.main_thread()
        if not self.forward_sizes:
            self.prepared_ahead = self.second_batch_started.wait(timeout=self.wait)
        self.forward_sizes.append(len(prepared))
        if self.oom_above is not None and len(prepared) > self.oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [pair_score(p) for p in prepared]


def test_prepare_runs_ahead_in_a_worker_thread_while_the_model_scores():
    task = MINI["MiniPhotos-T2I"]
    reference = run_recording(task, Recording(), batch_size=16)
    ahead, inline = Preparing(), Preparing(wait=0.5)
    result = run_recording(task, ahead, batch_size=16, workers=1)
    assert result.ranking.equals(reference.ranking)
    assert ahead.prepared_ahead and ahead.main_thread_forwards
    assert set(ahead.prepare_threads) == {"mrb-prep_0"} and len(ahead.prepare_threads) == 20
    assert (result.stats.decodes, result.stats.image_requests) == (reference.stats.decodes, reference.stats.image_requests)
    assert result.stats.prep_seconds > 0
    assert run_recording(task, inline, batch_size=16, workers=0).ranking.equals(reference.ranking)
    assert set(inline.prepare_threads) == {"MainThread"} and not inline.prepared_ahead


def test_a_failing_prepare_is_retried_once_and_the_scores_are_unchanged():
    task = MINI["MiniFacts-T2T"]
    result = run_recording(task, Preparing(failures=1), batch_size=16)
    assert (result.stats.retries, result.stats.scored) == (1, 320)
    assert result.ranking.equals(run_recording(task, Recording(), batch_size=16).ranking)
    with pytest.raises(MRBError, match=r"failed twice on a batch of 16 pairs .*: RuntimeError: flaky preprocessing"):
        run_recording(task, Preparing(failures=2), batch_size=16)


def test_out_of_memory_after_prepare_prepares_the_halves_again():
    task = MINI["MiniFacts-T2T"]
    reranker = Preparing(oom_above=5)
    result = run_recording(task, reranker, batch_size=16)
    assert reranker.forward_sizes[:4] == [16, 8, 4, 4] and set(reranker.forward_sizes[3:]) == {4}
    assert result.stats.oom_retries == 2
    # the first batch 16 + 8 + 4×4, the second prepared whole before the halving (16), then every pair once
    assert reranker.prepared_pairs == 16 + 8 + 16 + 16 + (320 - 16)
    # after the halving the worker still prepares ahead: only the two batches cut up after the fact are redone inline
    assert Counter(reranker.prepare_threads) == {"mrb-prep_0": 2 + 18 * 4, "MainThread": 1 + 4 + 4}
    assert result.ranking.equals(run_recording(task, Recording(), batch_size=16).ranking)


class Bounded(Recording):
    """A score-only reranker with a pixel bound, noting the size of each document image it is given."""

    max_pixels = 1000

    def __init__(self) -> None:
        super().__init__()
        self.sizes: dict[str, set[tuple[int, int]]] = {}

    def score(self, pairs):
        for p in pairs:
            self.sizes.setdefault(p.document.id, set()).add(p.document.image().size)
        return [pair_score(p) for p in pairs]


def test_an_image_over_pils_limit_is_decoded_reduced_once_through_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    docs = [Record("d-big", None, jpeg_bytes((160, 90))), Record("d-small", None, jpeg_bytes((40, 30)))]
    write_task(
        tmp_path,
        "Big-T2I",
        type_code="t2i",
        queries=[Record("q1", "one"), Record("q2", "two")],
        documents=docs,
        candidates=[(q, d.id, r, 1.0) for q in ("q1", "q2") for r, d in enumerate(docs, 1)],
        qrels=[("q1", "d-big", 1), ("q2", "d-small", 1)],
    )
    [task] = load_tasks("all", task_dirs=[tmp_path])
    reranker = Bounded()
    result = run_recording(task, reranker, batch_size=1, workers=1)  # the prefetch thread decodes too
    assert reranker.sizes == {"d-big": {(80, 45)}, "d-small": {(40, 30)}}  # 14 400 px: JPEG draft at 1/2
    assert (result.stats.decodes, result.stats.image_requests) == (2, 4)
    with pytest.raises(MRBError) as err:
        run_recording(task, Recording(), batch_size=1, workers=1)
    assert str(err.value) == (
        f"task Big-T2I: pack {tmp_path / 'packs' / 'Big-T2I'}: documents.parquet: document 'd-big': image does not decode "
        "(160×90 JPEG has 14400 pixels, over the limit of 5000)"
    )


def test_run_options_are_checked():
    with pytest.raises(MRBError, match="--overwrite must be one of never, missing, always, got 'sometimes'"):
        RunOptions(overwrite="sometimes")  # type: ignore[arg-type]
    with pytest.raises(MRBError, match="--max-batch-tokens must be at least 1, got 0"):
        RunOptions(max_batch_tokens=0)
    with pytest.raises(MRBError, match="--image-cache-mb must be 0 or more, got -1"):
        RunOptions(image_cache_mb=-1)


def test_a_records_image_source_honours_the_bound_it_is_asked_for():
    record = Record("d", None, jpeg_bytes((200, 100)))
    images = ImageCache(max_bytes=10**9, max_pixels=None)
    served = record.with_source(images.side("d"))
    assert served.image().size == (200, 100) and images.decodes == 1
    assert served.image(max_pixels=5000) is not served.image()  # another bound: decoded on its own, not from the cache
    assert (images.decodes, images.requests) == (1, 2)
    assert record.source is None and served == record  # the source is not part of a record's value
