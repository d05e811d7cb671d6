"""Score cache and resume: SIGKILL mid-run, failing batches, a full disk, the results-folder lock, --overwrite."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
from pathlib import Path

import pandas as pd
import pytest

import mrb
import mrb.cache
from mrb.cache import _read_segment
from mrb.errors import MRBError
from mrb.lock import ResultsLock
from mrb.results import read_leaderboard
from tests.packs import small_text_task
from tests.scale_helpers import Recording, pair_score, read_log, start_mini, wait_for_pairs

ROOT = Path(__file__).resolve().parents[1]
MINI_PAIRS = 1580


def cached_pairs(cache_dir: Path) -> list[tuple[str, str, str]]:
    """(task, query, doc) of every score in a cache folder, repeats kept."""
    out = []
    for key in cache_dir.glob("*/*/key.json"):
        task = json.loads(key.read_text())["task"]["task"]
        for segment in key.parent.glob("*.arrows"):
            for batch, columns in _read_segment(segment):
                if columns is not None:
                    out += [(task, q, d) for q, d in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist())]
    return out


def test_sigkill_then_resume_recomputes_nothing_and_equals_an_uninterrupted_run(tmp_path):
    reference = mrb.evaluate(Recording(), "mini", output_dir=tmp_path / "ref", batch_size=8, quiet=True)

    out, first_log = tmp_path / "out", tmp_path / "first.log"
    proc = start_mini(out, first_log, 0.01)
    wait_for_pairs(proc, first_log, 500)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL

    kept = cached_pairs(out / "cache")
    assert 400 <= len(kept) < MINI_PAIRS and len(set(kept)) == len(kept)
    assert set(kept) <= set(read_log(first_log))
    # fsyncs come in groups, but every batch is flushed to the kernel: the kill loses at most the batch in flight
    assert len(kept) >= len(read_log(first_log)) - 8

    second_log = tmp_path / "second.log"
    board = mrb.evaluate(Recording(second_log), "mini", output_dir=out, batch_size=8, quiet=True)
    rescored = read_log(second_log)
    assert not set(rescored) & set(kept)  # nothing already in the cache was computed again
    assert len(rescored) + len(kept) == MINI_PAIRS and len(set(rescored)) == len(rescored)
    columns = ["task", "value", "first_stage_value", "n_queries", "status"]
    pd.testing.assert_frame_equal(board[columns], reference[columns])
    for task in board["task"]:
        assert (out / "recording" / f"{task}.trec").read_text() == (tmp_path / "ref" / "recording" / f"{task}.trec").read_text()
    provenance = json.loads(board["provenance"].iloc[0])
    assert provenance["scored"] + provenance["cache_hits"] == provenance["pairs"] == 320


class Failing(Recording):
    """Raises on any batch holding document `bad` (`times` times in all, then recovers)."""

    def __init__(self, bad: str, times: int) -> None:
        super().__init__()
        self.bad, self.times = bad, times

    def score(self, pairs):
        if self.times and any(p.document.id == self.bad for p in pairs):
            self.times -= 1
            raise RuntimeError("boom")
        return super().score(pairs)


@pytest.fixture
def tasks_dir(tmp_path):
    small_text_task(tmp_path / "tasks")
    return tmp_path / "tasks"


def test_a_failing_batch_is_retried_once(tasks_dir, tmp_path):
    board = mrb.evaluate(Failing("d0", times=1), "all", task_dirs=[tasks_dir], batch_size=2, quiet=True)
    provenance = json.loads(board["provenance"].iloc[0])
    assert (provenance["retries"], provenance["scored"]) == (1, 6)
    with pytest.raises(MRBError, match=r"RuntimeError: boom\. No score cache is set \(give an output folder to keep scores\)$"):
        mrb.evaluate(Failing("d0", times=2), "all", task_dirs=[tasks_dir], batch_size=2, quiet=True)


def test_a_batch_failing_twice_stops_the_run_naming_task_and_queries_and_keeps_the_scores(tasks_dir, tmp_path):
    out = tmp_path / "out"
    # longest first in batches of 2: (q1 d2, q2 d3), (q1 d3, q2 d0), (q1 d1, q1 d0)
    with pytest.raises(MRBError) as err:
        mrb.evaluate(Failing("d0", times=2), "all", task_dirs=[tasks_dir], output_dir=out, batch_size=2, quiet=True)
    assert str(err.value) == (
        "task Small-T2T: reranker 'Failing' failed twice on a batch of 2 pairs (queries 'q1', 'q2'): "
        "RuntimeError: boom. The 2 pairs scored before it are kept in the score cache; run again to resume"
    )
    assert sorted(cached_pairs(out / "cache")) == [("Small-T2T", "q1", "d2"), ("Small-T2T", "q2", "d3")]
    again = Failing("d0", times=0)  # the same class and settings: the same cache key
    mrb.evaluate(again, "all", task_dirs=[tasks_dir], output_dir=out, batch_size=2, quiet=True)
    assert again.batches == [[("q1", "d3"), ("q2", "d0")], [("q1", "d1"), ("q1", "d0")]]


class DiskFull:
    """A file on a disk with `free` bytes left: writes beyond it fail with ENOSPC after a partial write."""

    def __init__(self, path: Path, mode: str, free: int) -> None:
        self.fh = open(path, mode)  # noqa: SIM115
        self.free = free

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.free:
            self.fh.write(data[: self.free])
            self.fh.flush()
            self.free = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.free -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)


def test_no_space_left_while_caching_is_a_clear_error_and_the_cache_stays_readable(tasks_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(mrb.cache, "open", lambda path, mode: DiskFull(path, mode, free=900), raising=False)
    with pytest.raises(MRBError) as err:
        mrb.evaluate(Recording(), "all", task_dirs=[tasks_dir], output_dir=out, batch_size=1, quiet=True)
    assert re.fullmatch(
        r"no space left on the device while writing the score cache .*\.arrows: the scores appended before this batch "
        r"are kept and the cache stays readable; free some space and run again to resume",
        str(err.value),
    )
    kept = cached_pairs(out / "cache")
    assert 1 <= len(kept) < 6
    monkeypatch.undo()
    again = Recording()
    board = mrb.evaluate(again, "all", task_dirs=[tasks_dir], output_dir=out, batch_size=1, quiet=True)
    assert sum(len(b) for b in again.batches) == 6 - len(kept)
    assert board["status"].iloc[0] == "ok"


def test_a_second_run_on_a_locked_results_folder_refuses_naming_the_holder(tasks_dir, tmp_path):
    out = tmp_path / "out"
    with ResultsLock(out), pytest.raises(MRBError) as err:
        mrb.evaluate("oracle", "all", task_dirs=[tasks_dir], output_dir=out, quiet=True)
    assert re.fullmatch(
        rf"results folder {re.escape(str(out))} is in use by pid {os.getpid()} on host {re.escape(socket.gethostname())} "
        r"\(started [0-9T:+-]+\); wait for that run to finish or use another --output",
        str(err.value),
    )
    assert mrb.evaluate("oracle", "all", task_dirs=[tasks_dir], output_dir=out, quiet=True)["value"].iloc[0] == 1.0


def test_overwrite_modes(tasks_dir, tmp_path):
    out = tmp_path / "out"

    def run(reranker, mode):
        return mrb.evaluate(reranker, "all", task_dirs=[tasks_dir], output_dir=out, overwrite=mode, quiet=True)

    run(Recording(), "missing")
    for mode, expected in (("missing", 0), ("never", 0), ("always", 6)):
        reranker = Recording()
        board = run(reranker, mode)
        assert sum(len(b) for b in reranker.batches) == expected, mode
        assert board["value"].iloc[0] == pytest.approx(read_leaderboard(out)["value"].iloc[0])
    missing = json.loads(run(Recording(), "missing")["provenance"].iloc[0])
    assert (missing["cache_hits"], missing["scored"]) == (6, 0)  # `missing` runs the task again, from the cache
    stored = read_leaderboard(out).to_dict("records")
    never = run(Recording(), "never")
    assert never.to_dict("records") == stored  # `never` returns the stored row, as it was (its own provenance)


def test_a_changed_setting_or_function_misses_the_cache(tasks_dir, tmp_path):
    out = tmp_path / "out"

    def plus(pairs):
        return [pair_score(p) + 1 for p in pairs]

    def minus(pairs):
        return [pair_score(p) - 1 for p in pairs]

    def run(fn, **kwargs):
        board = mrb.evaluate(fn, "all", task_dirs=[tasks_dir], output_dir=out, quiet=True, name="same-name", **kwargs)
        return json.loads(board["provenance"].iloc[0])

    assert run(plus)["scored"] == 6
    assert (run(plus)["cache_hits"], run(plus)["scored"]) == (6, 0)  # the same code: from the cache
    with pytest.raises(MRBError) as err:
        run(minus)
    assert str(err.value) == (
        f"results folder {out} holds results of another model named 'same-name' (they differ in code, definition); give this model "
        "its own name (or a new version), use another output folder, or pass --overwrite always to replace those results"
    )
    assert (run(minus, overwrite="always")["scored"], run(minus)["cache_hits"]) == (6, 6)
    mrb.evaluate("random", "all", task_dirs=[tasks_dir], output_dir=tmp_path / "r1", quiet=True, seed=1)
    hits = json.loads(
        mrb.evaluate(
            "random",
            "all",
            task_dirs=[tasks_dir],
            output_dir=tmp_path / "r2",
            cache_dir=tmp_path / "r1" / "cache",
            quiet=True,
            seed=2,
        )["provenance"].iloc[0]
    )
    assert hits["cache_hits"] == 0


def test_cli_run_options_summary_and_provenance(tasks_dir, tmp_path, capsys):
    from mrb import __version__
    from mrb.cli import main

    out = tmp_path / "out"
    command = [
        "run",
        "--model",
        "oracle",
        "--tasks",
        "all",
        "--task-dir",
        str(tasks_dir),
        "--output",
        str(out),
        "--max-batch-tokens",
        "40",
        "--workers",
        "0",
        "--batch-size",
        "4",
    ]
    assert main(command) == 0
    assert "oracle: 6 pairs: 6 scored, 0 from the cache; model " in capsys.readouterr().err
    assert json.loads(read_leaderboard(out)["provenance"].iloc[0])["batches"] == 3  # 1 with the defaults (32, no budget)
    assert main([*command, "--overwrite", "missing", "--quiet"]) == 0
    provenance = json.loads(read_leaderboard(out)["provenance"].iloc[0])
    assert {
        k: provenance[k] for k in ("mrb_version", "processes", "pairs", "scored", "cache_hits", "batches", "oom_retries")
    } == {
        "mrb_version": __version__,
        "processes": 1,
        "pairs": 6,
        "scored": 0,
        "cache_hits": 6,
        "batches": 0,
        "oom_retries": 0,
    }
    assert set(provenance) >= {
        "git_sha",
        "python",
        "torch",
        "transformers",
        "device",
        "dtype",
        "model_seconds",
        "prep_seconds",
        "seconds",
        "decodes",
    }
    capsys.readouterr()
    assert main([*command, "--workers", "-1"]) == 2
    assert capsys.readouterr().err == "mrb: error: --workers must be 0 or more, got -1\n"


def test_the_cache_commits_in_groups_and_loses_nothing_a_killed_run_appended(tasks_dir, tmp_path):
    import mrb.cache

    out = tmp_path / "out"
    board = mrb.evaluate(Recording(), "MiniFacts-T2T", output_dir=out, batch_size=1, quiet=True)
    stats = json.loads(board["provenance"].iloc[0])
    assert stats["batches"] == 320
    assert 1 <= stats["cache_syncs"] <= int(stats["seconds"] / mrb.cache.COMMIT_SECONDS) + 2  # not one fsync per batch
    assert len(cached_pairs(out / "cache")) == 320
