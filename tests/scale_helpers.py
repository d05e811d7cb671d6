"""Rerankers that record what the runner asks of them, for the run-at-scale tests (also run as a subprocess)."""

from __future__ import annotations

import hashlib
import io
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mrb.data import Pack, Pair
from mrb.rerankers.base import Reranker
from mrb.tasks import TaskSpec


def jpeg_bytes(size: tuple[int, int], seed: int = 0) -> bytes:
    """A JPEG of random pixels of the given (width, height)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def pair_score(pair: Pair) -> float:
    """A score that depends on the pair alone (query id, doc id)."""
    digest = hashlib.blake2b(f"{pair.query.id}\0{pair.document.id}".encode(), digest_size=8).digest()
    return struct.unpack("<Q", digest)[0] / 2**64


class Recording(Reranker):
    """Decodes every image it is given, scores by `pair_score`, and records each batch
    (in memory, and as ``task<TAB>query<TAB>doc`` lines in `log` when given)."""

    name = "recording"

    def __init__(self, log: Path | None = None, delay: float = 0.0) -> None:
        self.log, self.delay = log, delay
        self.batches: list[list[tuple[str, str]]] = []
        self.task = ""

    def start_task(self, task: TaskSpec, pack: Pack) -> None:
        self.task = task.name

    def score(self, pairs: Sequence[Pair]) -> list[float]:
        for p in pairs:
            p.query.image()
            p.document.image()
        time.sleep(self.delay)
        self.batches.append([(p.query.id, p.document.id) for p in pairs])
        if self.log is not None:
            with open(self.log, "a") as fh:
                fh.write("".join(f"{self.task}\t{p.query.id}\t{p.document.id}\n" for p in pairs))
        return [pair_score(p) for p in pairs]

    def settings(self) -> dict[str, Any]:
        return {"name": self.name}  # the log and the delay do not change a score


def read_log(path: Path) -> list[tuple[str, str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split("\t")) for line in path.read_text().splitlines()]  # type: ignore[misc]


def run_mini(out: str, log: str, delay: str) -> None:
    """The run the SIGKILL test interrupts (started as ``python -c``, so `Recording` keeps its module name)."""
    import mrb

    mrb.evaluate(Recording(Path(log), float(delay)), "mini", output_dir=out, batch_size=8, quiet=True)


def start_mini(out: Path, log: Path, delay: float) -> subprocess.Popen:
    """`run_mini` in a child process (so that it can be killed), from the repository root."""
    root = Path(__file__).resolve().parents[1]
    code = "import sys; from tests.scale_helpers import run_mini; run_mini(*sys.argv[1:])"
    return subprocess.Popen([sys.executable, "-c", code, str(out), str(log), str(delay)], cwd=root)


def wait_for_pairs(proc: subprocess.Popen, log: Path, pairs: int, timeout: float = 60.0) -> None:
    """Wait until the child's log holds `pairs` scored pairs (or it ended, or `timeout` passed)."""
    deadline = time.monotonic() + timeout
    while len(read_log(log)) < pairs and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
