"""Deterministic listwise rerankers for the window tests (also run as a subprocess by the kill test)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mrb.data import Pack, Record
from mrb.rerankers.base import ListwiseReranker, Window
from mrb.tasks import TaskSpec


class Reversing(ListwiseReranker):
    """Reverses every window, and records what each window showed (query, doc ids) and each call's size."""

    name = "reversing"
    window, stride = 4, 2

    def __init__(self, log: Path | None = None, delay: float = 0.0) -> None:
        self.log, self.delay = log, delay
        self.seen: list[tuple[str, list[str]]] = []
        self.calls: list[int] = []

    def rank_windows(self, windows: Sequence[Window]) -> list[list[int]]:
        time.sleep(self.delay)
        self.calls.append(len(windows))
        for w in windows:
            self.seen.append((w.query.id, [c.id for c in w.candidates]))
        if self.log is not None:
            with open(self.log, "a") as fh:
                fh.write("".join(f"{w.query.id}\t{' '.join(c.id for c in w.candidates)}\n" for w in windows))
        return [list(range(len(w.candidates)))[::-1] for w in windows]

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "window": self.window, "stride": self.stride}  # the log and the delay change nothing


class LoadCounting(Reversing):
    """`Reversing` that writes a line to ``<log>.loads`` whenever it is made ready (where a model loads its weights)."""

    name = "load-counting"

    def ready(self) -> None:
        with open(f"{self.log}.loads", "a") as fh:
            fh.write("ready\n")


class ListwiseOracle(ListwiseReranker):
    """Orders each window by the qrels label (ties keep the window's order): a perfect listwise model."""

    name = "listwise-oracle"

    def __init__(self, window: int, stride: int) -> None:
        self.window, self.stride = window, stride
        self.labels: dict[tuple[str, str], int] = {}

    def start_task(self, task: TaskSpec, pack: Pack) -> None:
        self.labels = {(q, d): int(r) for q, d, r in pack.qrels[["query_id", "doc_id", "relevance"]].itertuples(index=False)}

    def rank(self, instruction: str, query: Record, candidates: Sequence[Record]) -> list[int]:
        return sorted(range(len(candidates)), key=lambda i: -self.labels.get((query.id, candidates[i].id), 0))


def read_windows(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split("\t")) for line in path.read_text().splitlines()] if path.exists() else []  # type: ignore[misc]


def run_mini(out: str, log: str, delay: str) -> None:
    """The listwise run the SIGKILL test interrupts (started as ``python -c``, so `Reversing` keeps its module name)."""
    import mrb

    mrb.evaluate(Reversing(Path(log), float(delay)), "mini", output_dir=out, batch_size=4, quiet=True)
