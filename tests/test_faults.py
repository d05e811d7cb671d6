"""The fault campaign: runs killed at random points, damaged cache segments and full or read-only disks.

Each fault must end in one of two ways: the resumed run equals an uninterrupted one exactly, or the run
stops with one `mrb: error:` line (exit 2) that names the file, and leaves nothing half-written.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

import mrb
from mrb.cli import main
from mrb.errors import MRBError
from mrb.results import read_leaderboard
from tests.scale_helpers import Recording, read_log, start_mini, wait_for_pairs

ROOT = Path(__file__).resolve().parents[1]
MINI_PAIRS = 1580
VALUES = ["task", "value", "first_stage_value", "n_queries", "status", "RR@10", "R@10", "Judged@10"]


def outputs(folder: Path, model: str) -> dict[str, bytes]:
    """The per-task files of a results folder, by name (what a resumed run must reproduce byte for byte)."""
    return {p.name: p.read_bytes() for p in sorted((folder / model).glob("*")) if p.suffix in (".trec", ".parquet")}


def per_query(folder: Path, model: str) -> dict[str, pd.DataFrame]:
    return {p.stem: pd.read_parquet(p) for p in sorted((folder / model).glob("*.parquet"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    board = mrb.evaluate(Recording(), "mini", output_dir=out, batch_size=8, quiet=True)
    return board, out


def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tmp_path, reference):
    board_ref, out_ref = reference
    rng = random.Random(20261201)
    thresholds = [*sorted(rng.sample(range(1, MINI_PAIRS), 8)), MINI_PAIRS, MINI_PAIRS]  # the last two: while results are written
    for trial, threshold in enumerate(thresholds):
        out, log = tmp_path / f"out{trial}", tmp_path / f"log{trial}"
        proc = start_mini(out, log, 0.002)
        wait_for_pairs(proc, log, threshold)
        if threshold == MINI_PAIRS:
            time.sleep(rng.uniform(0.0, 0.3))  # somewhere in the metrics and the writing of results
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        resumed = Recording(tmp_path / f"again{trial}")
        board = mrb.evaluate(resumed, "mini", output_dir=out, batch_size=8, quiet=True)
        pd.testing.assert_frame_equal(board[VALUES], board_ref[VALUES])
        assert per_query(out, "recording").keys() == per_query(out_ref, "recording").keys()
        for task, frame in per_query(out, "recording").items():
            pd.testing.assert_frame_equal(frame, per_query(out_ref, "recording")[task])
        assert {k: v for k, v in outputs(out, "recording").items() if k.endswith(".trec")} == {
            k: v for k, v in outputs(out_ref, "recording").items() if k.endswith(".trec")
        }, f"trial {trial} (killed after {threshold} pairs)"
        rescored = read_log(tmp_path / f"again{trial}")
        assert len(set(rescored)) == len(rescored)  # nothing scored twice in the resumed run
        assert not list(out.rglob(".*.tmp")), "a temporary file was left behind"


def test_random_damage_to_a_cache_segment_never_changes_a_result(tmp_path, reference):
    board_ref, out_ref = reference
    rng = random.Random(7)
    for trial in range(10):
        out = tmp_path / f"out{trial}"
        mrb.evaluate(Recording(), "MiniFacts-T2T", output_dir=out, batch_size=8, quiet=True)
        [segment] = (out / "cache").glob("*/*/*.arrows")
        data = bytearray(segment.read_bytes())
        for _ in range(rng.choice([1, 4, 16])):
            at = rng.randrange(len(data))
            data[at] ^= rng.randrange(1, 256)
        if trial % 3 == 0:
            data = data[: rng.randrange(len(data))]  # cut short, too
        segment.write_bytes(bytes(data))
        again = Recording()
        board = mrb.evaluate(again, "MiniFacts-T2T", output_dir=out, batch_size=8, quiet=True)
        expected = board_ref[board_ref["task"] == "MiniFacts-T2T"].reset_index(drop=True)
        pd.testing.assert_frame_equal(board[VALUES], expected[VALUES])
        assert outputs(out, "recording")["MiniFacts-T2T.trec"] == outputs(out_ref, "recording")["MiniFacts-T2T.trec"]


@contextmanager
def tmpfs(path: Path, size: str, *options: str):
    """A small tmpfs mounted at `path` (needs root and mount rights; skipped elsewhere)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(disk: Path, leave_blocks: int) -> None:
    """Leave exactly `leave_blocks` free blocks on `disk`."""
    stats = os.statvfs(disk)
    (disk / "filler").write_bytes(b"\0" * max(0, (stats.f_bavail - leave_blocks) * stats.f_frsize))


def test_a_full_disk_at_each_writer_is_one_error_line_and_leaves_nothing_half_written(tmp_path, capsys):
    expected = mrb.evaluate("oracle", "MiniFacts-T2T", quiet=True)["value"].iloc[0]
    named: dict[str, int] = {}
    with tmpfs(tmp_path / "disk", "256k") as disk:
        for free in range(0, 40):
            for stale in disk.iterdir():
                subprocess.run(["rm", "-rf", str(stale)], check=True)
            fill(disk, free)
            out = disk / "R"
            code = main(
                ["run", "--model", "oracle", "--tasks", "MiniFacts-T2T", "--output", str(out), "--batch-size", "32", "--quiet"]
            )
            err = capsys.readouterr().err
            if code == 0:
                assert read_leaderboard(out)["value"].iloc[0] == expected
                break
            assert code == 2 and err.count("\n") == 1 and err.startswith("mrb: error: "), err
            assert "no space left on the device" in err, err
            named[_writer(err)] = named.get(_writer(err), 0) + 1
            assert not list(out.rglob(".*.tmp")), "a temporary file was left behind"
            if (out / "leaderboard.parquet").exists():
                read_leaderboard(out)  # still whole
        else:
            pytest.fail("the run never fitted on the disk")
    assert set(named) >= {"lock", "cache key", "cache segment", "per-query values", "run file", "leaderboard"}, named


def _writer(err: str) -> str:
    """Which of a run's writers an error line names."""
    for needle, writer in (
        (".mrb.lock", "lock"),
        ("key.json", "cache key"),
        (".arrows", "cache segment"),
        ("MiniFacts-T2T.parquet", "per-query values"),
        ("MiniFacts-T2T.trec", "run file"),
        ("leaderboard.parquet", "leaderboard"),
    ):
        if needle in err:
            return writer
    return err


def test_a_full_temporary_folder_is_one_error_line(tmp_path, capsys, monkeypatch):
    import tempfile

    with tmpfs(tmp_path / "tmp", "8k") as disk:
        fill(disk, 0)
        monkeypatch.setattr(tempfile, "tempdir", str(disk))
        assert main(["run", "--model", "oracle", "--tasks", "MiniPhotos-T2I", "--output", str(tmp_path / "R"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and err.startswith("mrb: error: pack ")
        and f"cannot keep its images in the temporary folder {disk}" in err
    )


def test_a_read_only_output_is_one_error_line(tmp_path, capsys):
    with tmpfs(tmp_path / "ro", "64k", "ro") as disk:
        assert main(["run", "--model", "oracle", "--tasks", "MiniFacts-T2T", "--output", str(disk / "R"), "--quiet"]) == 2
    assert capsys.readouterr().err == f"mrb: error: cannot create the folder {disk / 'R'}: the file system is read-only\n"


def test_a_full_disk_while_a_pack_is_written_is_one_error_and_leaves_no_staging_folder(tmp_path):
    from mrb.data import Record, write_pack

    candidates = pd.DataFrame({"query_id": ["q"], "doc_id": ["d"], "rank": [1], "score": [1.0]})
    qrels = pd.DataFrame({"query_id": ["q"], "doc_id": ["d"], "relevance": [1]})
    with tmpfs(tmp_path / "disk", "64k") as disk:
        fill(disk, 2)
        with pytest.raises(MRBError) as err:
            write_pack(
                disk / "P",
                queries=[Record("q", "x")],
                documents=[Record("d", "y" * 200_000)],
                candidates=candidates,
                qrels=qrels,
                manifest={},
            )
        assert str(err.value) == f"cannot write the pack {disk / 'P'}: no space left on the device; free some space and run again"
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]
