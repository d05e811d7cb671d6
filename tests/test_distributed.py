"""torchrun with two CPU processes (gloo) gives the leaderboard of one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

import mrb
from mrb.distributed import World

ROOT = Path(__file__).resolve().parents[1]


def test_shards_are_disjoint_deterministic_and_cover_every_query():
    ids = ["q3", "q1", "q2", "q1", "q5", "q4"]
    shards = [World(rank, 2).shard(ids) for rank in (0, 1)]
    assert shards == [{"q1", "q3", "q5"}, {"q2", "q4"}]
    assert World().shard(ids) == {"q1", "q2", "q3", "q4", "q5"}


def test_two_process_torchrun_equals_one_process(tmp_path):
    single = mrb.evaluate("random", "mini", quiet=True)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "mrb", "run", "--model", "random", "--tasks", "mini", "--output", str(out), "--quiet", "--batch-size", "8"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("## nDCG@10 by type") == 1  # only rank 0 prints
    board = pd.read_parquet(out / "leaderboard.parquet")
    columns = ["task", "value", "first_stage_value", "n_queries", "status"]
    pd.testing.assert_frame_equal(board[columns], single[columns])
    for row, alone in zip(board.itertuples(), single.itertuples()):
        provenance = json.loads(row.provenance)
        pairs = json.loads(alone.provenance)["pairs"]  # rank 0 adds the other rank's stats to its own
        assert (provenance["processes"], provenance["pairs"], provenance["scored"]) == (2, pairs, pairs)
    segments = sorted(p.parent.name for p in (out / "cache").glob("*/*/*.arrows"))
    assert len(segments) == 10 and len(set(segments)) == 5  # one segment per rank and task
