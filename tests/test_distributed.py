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
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "mrb",
        "run",
        "--model",
        "random",
        "--tasks",
        "mini",
        "--output",
        str(out),
        "--quiet",
        "--batch-size",
        "8",
    ]
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


TORCHRUN_EVALUATE = """
import json, sys
import torch
import torch.distributed as dist
import mrb
from tests.scale_helpers import pair_score


@mrb.register("init-order")
class InitOrder(mrb.Reranker):
    def __init__(self):
        self.built_in_group = dist.is_initialized()  # the session sets up the world before it builds the model
        self.device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")

    def score(self, pairs):
        return [pair_score(p) for p in pairs]

    def settings(self):
        return {"name": self.name, "built_in_group": self.built_in_group}


board = mrb.evaluate("init-order", "MiniFacts-T2T", output_dir=sys.argv[1], quiet=True)
if dist.is_initialized():
    raise SystemExit("the session left the process group it started")
if len(board):
    print(json.dumps({"settings": json.loads(board["settings"][0]), "provenance": json.loads(board["provenance"][0])}))
"""


def test_evaluate_under_torchrun_sets_up_each_rank_before_building_its_model(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(TORCHRUN_EVALUATE)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(script),
        str(tmp_path / "out"),
    ]
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("{")]  # rank 0 alone returns rows
    result = json.loads(line)
    assert result["settings"]["built_in_group"] is True
    devices = result["provenance"]["devices"]
    assert [d.split(" (")[0] for d in devices] == ["rank 0: cpu", "rank 1: cpu"]  # with GPUs: rank 0: cuda:0, rank 1: cuda:1
    assert result["provenance"]["processes"] == 2
