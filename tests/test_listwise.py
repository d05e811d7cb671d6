"""Listwise rerankers under the runner: window arithmetic, repairs and their counts, the cache and resume after
SIGKILL, sharding by query, and a perfect listwise oracle against the pointwise one."""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import mrb
from mrb.cache import _read_segment
from mrb.cli import main
from mrb.data import Record
from mrb.distributed import World
from mrb.errors import MRBError
from mrb.identity import identify
from mrb.listwise import Outcome, repair, window_spans
from mrb.options import RunOptions
from mrb.rerankers.base import ListwiseReranker
from mrb.runner import run_task
from mrb.tasks import load_tasks
from tests.listwise_helpers import ListwiseOracle, LoadCounting, Reversing, read_windows
from tests.packs import write_task

ROOT = Path(__file__).resolve().parents[1]
MINI_WINDOWS = 711  # 79 queries of 20 candidates, 9 windows of 4 moved by 2 each
VALUES = ["task", "value", "first_stage_value", "n_queries", "status", "RR@10", "R@10", "Judged@10"]


def test_windows_slide_from_the_back_by_the_stride_until_one_reaches_the_top():
    assert window_spans(10, 4, 2) == [(6, 10), (4, 8), (2, 6), (0, 4)]
    assert window_spans(9, 4, 2) == [(5, 9), (3, 7), (1, 5), (0, 3)]  # rank_llm: the last moved by 2, cut at the top
    assert window_spans(9, 4, 2, full_last_window=True) == [(5, 9), (3, 7), (1, 5), (0, 4)]  # MTEB's LightOn wrapper
    assert window_spans(100, 20, 10) == [(s, s + 20) for s in range(80, -1, -10)]  # RankGPT's 9 windows over the top 100
    assert window_spans(20, 20, 10) == [(0, 20)]
    assert window_spans(15, 20, 10) == window_spans(15, 20, 10, full_last_window=True) == [(0, 15)]  # fewer than a window
    assert window_spans(1, 4, 2) == window_spans(0, 4, 2) == []
    for window, stride in ((1, 1), (4, 0), (4, 5)):
        with pytest.raises(MRBError) as err:
            window_spans(10, window, stride)
        assert str(err.value) == (
            f"a listwise window needs window >= 2 and 1 <= stride <= window, got window {window}, stride {stride}"
        )


def test_an_output_is_repaired_into_a_permutation_as_rank_llm_repairs_it():
    assert repair([2, 0, 1, 3], 4) == Outcome([2, 0, 1, 3])
    assert repair([3, 3, 7, -1, 0], 4) == Outcome([3, 0, 1, 2], duplicates=1, unknown=2, missing=2)
    assert repair([5, 9], 4) == Outcome([0, 1, 2, 3], unparsable=True)
    assert repair([], 3) == Outcome([0, 1, 2], unparsable=True)
    assert repair([1], 2).repaired and not repair([1, 0], 2).repaired and not repair([], 2).repaired


def ten_candidates(root: Path) -> Path:
    """Task Ten-T2T: q1 over d0 … d9 (first-stage order), q2 over e0 … e2; d0 and e2 are relevant."""
    docs = [Record(f"d{i}", f"passage {i}") for i in range(10)] + [Record(f"e{i}", f"other {i}") for i in range(3)]
    write_task(
        root,
        "Ten-T2T",
        queries=[Record("q1", "first"), Record("q2", "second")],
        documents=docs,
        candidates=[("q1", f"d{i}", i + 1, 1.0 - i / 10) for i in range(10)] + [("q2", f"e{i}", i + 1, 0.5) for i in range(3)],
        qrels=[("q1", "d0", 1), ("q2", "e2", 1)],
    )
    return root


def ranked(board: pd.DataFrame, out: Path, model: str, task: str) -> dict[str, list[str]]:
    run = pd.read_csv(out / model / f"{task}.trec", sep=" ", header=None, names=["q", "Q0", "doc", "rank", "score", "tag"])
    return {q: group.sort_values("rank")["doc"].tolist() for q, group in run.groupby("q")}


def test_a_reversing_model_gives_the_hand_computed_order_through_the_runner(tmp_path):
    tasks = ten_candidates(tmp_path / "tasks")
    model = Reversing()
    out = tmp_path / "out"
    board = mrb.evaluate(model, "Ten-T2T", task_dirs=[tasks], output_dir=out, batch_size=8, quiet=True)
    # q1: windows (6,10), (4,8), (2,6), (0,4), each reversed, each seeing what the one before left
    assert [ids for q, ids in model.seen if q == "q1"] == [
        ["d6", "d7", "d8", "d9"],
        ["d4", "d5", "d9", "d8"],
        ["d2", "d3", "d8", "d9"],
        ["d0", "d1", "d9", "d8"],
    ]
    assert ranked(board, out, "reversing", "Ten-T2T") == {
        "q1": ["d8", "d9", "d1", "d0", "d3", "d2", "d5", "d4", "d7", "d6"],
        "q2": ["e2", "e1", "e0"],  # one window of its 3 candidates
    }
    assert model.calls == [2, 1, 1, 1]  # the first round holds a window of each query
    run = pd.read_csv(out / "reversing" / "Ten-T2T.trec", sep=" ", header=None)
    assert run[run[0] == "q1"][4].tolist() == [10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]  # n − rank: no tie
    assert board["value"].iloc[0] == pytest.approx((1 / math.log2(5) + 1.0) / 2)  # d0 4th for q1, e2 first for q2


class PerQuery(ListwiseReranker):
    """Answers the k-th window of each query with outputs[query][k]."""

    name = "per-query"
    window, stride = 4, 2

    def __init__(self, outputs: dict[str, list[list[int]]]) -> None:
        self.outputs = outputs
        self.asked: dict[str, int] = {}

    def rank(self, instruction, query, candidates):
        k = self.asked.get(query.id, 0)
        self.asked[query.id] = k + 1
        return self.outputs[query.id][k]


def six_and_four(root: Path) -> Path:
    """Task Six-T2T: q1 over d0 … d5, q2 over e0 … e3 (first-stage order)."""
    write_task(
        root,
        "Six-T2T",
        queries=[Record("q1", "first"), Record("q2", "second")],
        documents=[Record(f"d{i}", f"passage {i}") for i in range(6)] + [Record(f"e{i}", f"other {i}") for i in range(4)],
        candidates=[("q1", f"d{i}", i + 1, 0.0) for i in range(6)] + [("q2", f"e{i}", i + 1, 0.0) for i in range(4)],
        qrels=[("q1", "d5", 1), ("q2", "e0", 1)],
    )
    return root


def test_malformed_outputs_are_repaired_and_counted_in_the_stats_and_the_leaderboard_row(tmp_path, caplog):
    tasks = six_and_four(tmp_path / "tasks")
    outputs = {
        # q1's first window shows d2 d3 d4 d5: index 3 twice, 7 and -1 outside it → d5 d2, then d3 d4 appended
        # q1's second window shows d0 d1 d5 d2: a valid permutation → d5 d0 d1 d2
        "q1": [[3, 3, 7, -1, 0], [2, 0, 1, 3]],
        "q2": [[]],  # nothing usable: e0 … e3 keep their order
    }
    out = tmp_path / "out"
    board = mrb.evaluate(PerQuery(outputs), "Six-T2T", task_dirs=[tasks], output_dir=out, quiet=True)
    assert ranked(board, out, "per-query", "Six-T2T") == {
        "q1": ["d5", "d0", "d1", "d2", "d3", "d4"],
        "q2": ["e0", "e1", "e2", "e3"],
    }
    provenance = json.loads(board["provenance"].iloc[0])
    assert {k: provenance[k] for k in ("pairs", "windows", "window_cache_hits", "repaired_windows", "unparsable_windows")} == {
        "pairs": 10,
        "windows": 3,
        "window_cache_hits": 0,
        "repaired_windows": 1,
        "unparsable_windows": 1,
    }
    assert (provenance["duplicate_labels"], provenance["unknown_labels"], provenance["missing_labels"]) == (1, 2, 2)
    assert board["value"].iloc[0] == 1.0
    model = PerQuery(outputs)
    again = mrb.evaluate(model, "Six-T2T", task_dirs=[tasks], output_dir=out, quiet=True)
    assert model.asked == {}
    cached = json.loads(again["provenance"].iloc[0])  # every window from the cache: the same repairs, counted again
    assert (cached["windows"], cached["window_cache_hits"], cached["repaired_windows"], cached["unparsable_windows"]) == (
        0,
        3,
        1,
        1,
    )
    assert (cached["duplicate_labels"], cached["unknown_labels"], cached["missing_labels"]) == (1, 2, 2)


def test_the_summary_line_counts_windows_and_repairs():
    from mrb.runner import RunStats

    stats = RunStats(pairs=10, windows=3, window_cache_hits=2, repaired_windows=1, unparsable_windows=1)
    stats.duplicate_labels, stats.unknown_labels, stats.missing_labels, stats.model_seconds = 1, 2, 2, 1.5
    assert stats.summary() == (
        "10 candidates in 5 windows: 3 ranked, 2 from the cache; 1 outputs repaired (1 duplicate and 2 unknown labels dropped, "
        "2 missing appended), 1 unparsable (order kept); model 1.5 s (2.0 windows/s), preparation 0.0 s, total 0.0 s; "
        "0 image decodes for 0 requests; 0 out-of-memory retries, 0 failed batches retried"
    )


class Answers(ListwiseReranker):
    """Returns `answer` for every batch of windows."""

    name = "answers"
    window, stride = 4, 2

    def __init__(self, answer) -> None:
        self.answer = answer

    def rank_windows(self, windows):
        return self.answer(windows)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            lambda ws: ["[1] > [2]"] * len(ws),
            "returned a str for the window of query 'q1'; rank must return indices into the window's candidates",
        ),
        (
            lambda ws: [[0, 1.5]] * len(ws),
            "returned float 1.5 in the order of the window of query 'q1'; rank must return indices into the window's candidates",
        ),
        (
            lambda ws: [[True]] * len(ws),
            "returned bool True in the order of the window of query 'q1'; rank must return indices into the window's candidates",
        ),
        (lambda ws: [[0]], "returned 1 outputs for 2 windows; rank_windows must return one order per window"),
        (lambda ws: None, "returned a NoneType for 2 windows; rank_windows must return one order per window"),
    ],
)
def test_an_output_that_is_not_indices_stops_the_task_naming_it(tmp_path, answer, message):
    tasks = six_and_four(tmp_path / "tasks")
    with pytest.raises(MRBError) as err:
        mrb.evaluate(Answers(answer), "Six-T2T", task_dirs=[tasks], quiet=True)
    assert str(err.value) == f"task Six-T2T: reranker 'answers' {message}"


def test_a_failing_batch_of_windows_is_retried_once_and_out_of_memory_halves_the_batch(tmp_path):
    tasks = six_and_four(tmp_path / "tasks")
    failures = iter([RuntimeError("boom")])

    def flaky(windows):
        for exc in failures:
            raise exc
        return [list(range(len(w.candidates))) for w in windows]

    provenance = json.loads(mrb.evaluate(Answers(flaky), "Six-T2T", task_dirs=[tasks], quiet=True)["provenance"].iloc[0])
    assert (provenance["retries"], provenance["windows"]) == (1, 3)

    def broken(windows):
        raise RuntimeError("boom")

    out = tmp_path / "out"
    with pytest.raises(MRBError) as err:
        mrb.evaluate(Answers(broken), "Six-T2T", task_dirs=[tasks], output_dir=out, quiet=True)
    assert str(err.value) == (
        "task Six-T2T: reranker 'answers' failed twice on a batch of 2 windows (queries 'q1', 'q2'): RuntimeError: boom. "
        "The 0 windows ranked before it are kept in the score cache; run again to resume"
    )
    sizes = []

    def small(windows):
        sizes.append(len(windows))
        if len(windows) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [list(range(len(w.candidates))) for w in windows]

    provenance = json.loads(mrb.evaluate(Answers(small), "Six-T2T", task_dirs=[tasks], quiet=True)["provenance"].iloc[0])
    assert sizes == [2, 1, 1, 1] and provenance["oom_retries"] == 1

    def never(windows):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(MRBError) as err:
        mrb.evaluate(Answers(never), "Six-T2T", task_dirs=[tasks], output_dir=tmp_path / "never", quiet=True)
    assert str(err.value) == (
        "task Six-T2T: out of memory on a single window (query 'q1', 4 candidates); lower window, max_pixels or max_length"
    )
    with pytest.raises(MRBError, match="a listwise reranker: it ranks windows of candidates"):
        Answers(small).score([])


def test_a_perfect_listwise_oracle_reaches_the_oracles_ndcg_on_every_mini_task():
    # windows of 12 moved by 2 carry the 10 best of each list to the top window, which orders them
    listwise = mrb.evaluate(ListwiseOracle(12, 2), "mini", quiet=True)
    pointwise = mrb.evaluate("oracle", "mini", quiet=True)
    columns = ["task", "value", "RR@10", "R@10", "n_queries"]
    pd.testing.assert_frame_equal(listwise[columns], pointwise[columns])
    assert (listwise["value"] > listwise["first_stage_value"]).all()
    assert sum(json.loads(p)["windows"] for p in listwise["provenance"]) == 79 * 5  # (8,20) (6,18) (4,16) (2,14) (0,12)


def test_a_listwise_model_has_an_identity_and_its_windows_are_cached_under_it(tmp_path):
    identity = identify(Reversing())
    assert identity.unproven is None and identity.fields["settings"] == {"name": "reversing", "window": 4, "stride": 2}
    wider = Reversing()
    wider.window = 6  # another window ranks otherwise: another model, with its own cache and results
    assert identify(wider).differences(identity) == ["settings"]
    tasks = ten_candidates(tmp_path / "tasks")
    out = tmp_path / "out"
    mrb.evaluate(Reversing(), "Ten-T2T", task_dirs=[tasks], output_dir=out, quiet=True)
    [segment] = (out / "cache").glob(f"{identity.digest}/*/*.arrows")
    batches = [batch for batch, good in _read_segment(segment) if good]
    assert len(batches) == 5  # one per window
    first = batches[0].to_pydict()
    assert first["query_id"] == ["q1"] * 5
    assert [d.rsplit(":", 1)[1] for d in first["doc_id"]] == ["0", "1", "2", "3", "n"]
    assert first["doc_id"][0].startswith("window:6-10:") and first["score"] == [3.0, 2.0, 1.0, 0.0, 4.0]


def test_a_listwise_model_loads_only_when_a_window_is_not_cached(tmp_path):
    tasks, out, log = ten_candidates(tmp_path / "tasks"), tmp_path / "out", tmp_path / "windows"
    first = mrb.evaluate(LoadCounting(log), "Ten-T2T", task_dirs=[tasks], output_dir=out, quiet=True)
    loads = tmp_path / "windows.loads"
    assert loads.read_text() == "ready\n"
    again = mrb.evaluate(LoadCounting(log), "Ten-T2T", task_dirs=[tasks], output_dir=out, quiet=True)
    assert loads.read_text() == "ready\n"  # every window came from the cache: not loaded again
    assert json.loads(again["provenance"][0])["window_cache_hits"] == 5
    assert again["value"][0] == first["value"][0]


def test_sigkill_mid_run_then_resume_ranks_each_window_once_and_equals_an_uninterrupted_run(tmp_path):
    reference = mrb.evaluate(Reversing(), "mini", output_dir=tmp_path / "ref", batch_size=4, quiet=True)
    out, first_log = tmp_path / "out", tmp_path / "first.log"
    code = "import sys; from tests.listwise_helpers import run_mini; run_mini(*sys.argv[1:])"
    proc = subprocess.Popen([sys.executable, "-c", code, str(out), str(first_log), "0.005"], cwd=ROOT)
    deadline = time.monotonic() + 60
    while len(read_windows(first_log)) < 300 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    kept = sum(
        d.endswith(":n")
        for segment in (out / "cache").glob("*/*/*.arrows")
        for b, good in _read_segment(segment)
        if good
        for d in b.column(1).to_pylist()
    )
    assert 250 <= kept < MINI_WINDOWS
    second_log = tmp_path / "second.log"
    board = mrb.evaluate(Reversing(second_log), "mini", output_dir=out, batch_size=4, quiet=True)
    again = read_windows(second_log)
    assert len(again) == MINI_WINDOWS - kept and not set(again) & set(read_windows(first_log)[:kept])
    pd.testing.assert_frame_equal(board[VALUES], reference[VALUES])
    for task in board["task"]:
        assert (out / "reversing" / f"{task}.trec").read_bytes() == (tmp_path / "ref" / "reversing" / f"{task}.trec").read_bytes()
    provenance = [json.loads(p) for p in board["provenance"]]
    assert sum(p["windows"] for p in provenance) == MINI_WINDOWS - kept
    assert sum(p["window_cache_hits"] for p in provenance) == kept


SENT: list = []  # what rank 1 of `TwoRanks` sends to rank 0


class TwoRanks(World):
    """Rank `rank` of two, in one process: rank 1 leaves its part in `SENT`, rank 0 gathers it from there."""

    def gather(self, obj):
        if self.rank == 1:
            SENT.append(obj)
            return None
        return [obj, SENT.pop()]


def test_under_two_ranks_each_query_is_ranked_on_one_rank_and_rank_0_gets_the_whole_ranking():
    [task] = load_tasks("MiniFacts-T2T")
    models = {rank: Reversing() for rank in (0, 1)}
    assert run_task(task, models[1], options=RunOptions(), world=TwoRanks(1, 2)) is None
    split = run_task(task, models[0], options=RunOptions(), world=TwoRanks(0, 2))
    alone = run_task(task, Reversing(), options=RunOptions())
    queries = [{q for q, _ in models[rank].seen} for rank in (0, 1)]
    assert (
        queries == [TwoRanks(rank, 2).shard(sorted(queries[0] | queries[1])) for rank in (0, 1)] and not queries[0] & queries[1]
    )
    assert split is not None and alone is not None
    pd.testing.assert_frame_equal(split.ranking, alone.ranking)
    assert split.stats.windows == alone.stats.windows == 16 * 9


def test_report_and_paired_comparison_take_a_listwise_run_like_any_other(tmp_path, capsys):
    out = tmp_path / "out"
    mrb.evaluate(Reversing(), "MiniFacts-T2T,MiniPhotos-T2I", output_dir=out, quiet=True)
    mrb.evaluate("oracle", "MiniFacts-T2T,MiniPhotos-T2I", output_dir=out, quiet=True)
    assert main(["report", "--results", str(out), "--no-reported"]) == 0
    report = capsys.readouterr().out
    assert "| reversing   |     42.11 |     44.67 |            42.11 |           44.67 |     43.39 |        -34.72 |" in report
    assert "| MiniFacts-T2T  | reversing |   42.11 | 37.29–46.50  |  29.17 | 81.25 |     36.88 |             91.67 |" in report
    assert main(["report", "--results", str(out), "--compare", "reversing", "oracle"]) == 0
    comparison = capsys.readouterr().out
    assert "| MiniFacts-T2T  | T→T  |      16 |     42.11 |  91.75 |                 +49.65 | 0.0001 |" in comparison
    assert "| ALL (2)        |      |      32 |     43.39 |  90.21 |                 +46.83 | 0.0001 |" in comparison


def test_depths_are_refused_for_a_listwise_model_before_anything_runs(tmp_path):
    message = (
        "depths: a listwise model's ranking of the top d is not a cut of its ranking of the whole list (its windows "
        "see other candidates), so depths cannot come from one pass: run the task at each depth (its YAML's depth) instead"
    )
    for model in (Reversing(), "rank-zephyr-7b"):
        with pytest.raises(MRBError) as refused:
            mrb.evaluate(model, "mini", output_dir=tmp_path / "out", depths=[5, 10], quiet=True)
        assert str(refused.value) == message
    assert not (tmp_path / "out").exists()


def test_mrb_report_depths_refuses_a_listwise_run_by_name(tmp_path, capsys):
    out = tmp_path / "out"
    mrb.evaluate(Reversing(), "MiniFacts-T2T", output_dir=out, quiet=True)
    capsys.readouterr()
    assert main(["report", "--results", str(out), "--depths", "5,10"]) == 2
    assert capsys.readouterr().err == (
        "mrb: error: model 'reversing' on task MiniFacts-T2T: a listwise model's ranking of the top d is not a cut of "
        "its ranking of the whole list (its windows see other candidates), so depths cannot come from one pass: run the "
        "task at each depth (its YAML's depth) instead\n"
    )


class FailsFromRound(Reversing):
    """`Reversing` whose calls fail from round `fail_from` on (every round is one call: 16 windows, batch size 32)."""

    name = "fails-from-round"

    def __init__(self, fail_from: int) -> None:
        super().__init__()
        self.fail_from = fail_from

    def rank_windows(self, windows):
        if len(self.calls) >= self.fail_from:
            raise RuntimeError("boom")
        return super().rank_windows(windows)


def test_the_plan_of_a_listwise_model_counts_its_windows_and_those_the_cache_replays(tmp_path, capsys):
    out, first = tmp_path / "out", "MiniFacts-T2T"
    mrb.evaluate(FailsFromRound(0), first, output_dir=out, batch_size=32, dry_run=True)
    assert capsys.readouterr().out.splitlines() == [
        "plan of fails-from-round: 1 task",
        "task           type       windows      cached    to score",
        "MiniFacts-T2T  T→T            144           0         144",  # 16 queries × 9 windows of 4 moved by 2
        "total                         144           0         144",
        f"time: unknown (no windows/s measured for listwise models on cpu ({platform.processor() or platform.machine()}))",
        "disk: about 84 KiB for the score cache and the result files",
    ]
    with pytest.raises(MRBError, match="The 32 windows ranked before it are kept in the score cache"):
        mrb.evaluate(FailsFromRound(2), first, output_dir=out, batch_size=32, quiet=True)
    mrb.evaluate(FailsFromRound(0), first, output_dir=out, batch_size=32, dry_run=True)
    # rounds 0 and 1 are replayed from the cache: round 1's windows show round 0's reversed order
    assert "MiniFacts-T2T  T→T            144          32         112" in capsys.readouterr().out
    mrb.evaluate(FailsFromRound(99), first, output_dir=out, batch_size=32, quiet=True)
    mrb.evaluate(FailsFromRound(0), first, output_dir=out, batch_size=32, dry_run=True)
    assert capsys.readouterr().out.splitlines()[-1] == (
        "nothing to score: every window is in the score cache, so the model will not be loaded"
    )
