"""Data-parallel runs on torch.distributed: one process per GPU (or CPU worker), queries split by rank.

`torchrun --nproc-per-node N -m mrb run …` sets RANK / WORLD_SIZE / LOCAL_RANK; every rank loads the
model on its own device, scores its share of each task's queries (writing its own score-cache
segment), and sends the scores to rank 0, which ranks, computes the metrics and writes results.
Control messages go over a gloo group, so the same code runs on CPU-only machines and on GPUs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank, size and the gloo group for control messages."""

    rank: int = 0
    size: int = 1
    group: Any = None
    owned: bool = False  # MRB started the process group (and so ends it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier(group=self.group)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if self.size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` (by rank) on rank 0; None elsewhere."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.size if self.is_main else None
        dist.gather_object(obj, out, dst=0, group=self.group)
        return out

    def shard(self, query_ids: Sequence[str]) -> set[str]:
        """This rank's queries: the sorted distinct ids dealt round-robin (the same on every rank)."""
        return set(sorted(set(query_ids))[self.rank :: self.size])


@cache
def init_world() -> World:
    """The world torchrun described in the environment, or a single process when there is none."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():  # this rank's GPU, before any model is built on "cuda"
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    owned = not dist.is_initialized()
    if owned:
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(hours=2))
    group = dist.new_group(backend="gloo", timeout=timedelta(hours=2))
    world = World(dist.get_rank(), dist.get_world_size(), group, owned)
    log.info("rank %d of %d", world.rank, world.size)
    return world


def close_world(world: World) -> None:
    """End the process group MRB started (one the caller started stays theirs)."""
    if world.size > 1:
        import torch.distributed as dist

        if world.owned and dist.is_initialized():
            dist.destroy_process_group()
        elif dist.is_initialized():
            dist.destroy_process_group(world.group)
        init_world.cache_clear()
