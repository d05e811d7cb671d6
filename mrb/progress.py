"""Run statistics, rich progress bars (per task and overall) and the closing summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Self

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


@dataclass
class RunStats:
    """What a run did: pairs, cache hits, image decodes, retries and where the time went."""

    pairs: int = 0  # pairs of the task(s) handled by this process
    scored: int = 0  # pairs the model scored in this run
    cache_hits: int = 0  # pairs whose score came from the score cache
    cache_rejected: int = 0  # cached scores dropped because their batch failed its checksum (scored again)
    batches: int = 0
    decodes: int = 0  # images decoded
    image_requests: int = 0  # images the reranker asked for
    oom_retries: int = 0  # out-of-memory errors answered by halving the batch
    retries: int = 0  # failed batches retried
    prep_seconds: float = 0.0  # the reranker's prepare(), or decoding images ahead of the model
    model_seconds: float = 0.0  # inside the reranker's forward() (or score(), when it does not prepare)
    seconds: float = 0.0  # wall time, pack reading and metrics included

    def add(self, other: RunStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def pairs_per_second(self) -> float:
        return self.scored / self.model_seconds if self.model_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("prep_seconds", "model_seconds", "seconds"):
            out[key] = round(out[key], 3)
        out["pairs_per_second"] = round(self.pairs_per_second, 1)
        return out

    def summary(self) -> str:
        return (
            f"{self.pairs} pairs: {self.scored} scored, {self.cache_hits} from the cache"
            + (f" ({self.cache_rejected} damaged cache entries scored again)" if self.cache_rejected else "") + "; "
            f"model {self.model_seconds:.1f} s ({self.pairs_per_second:,.0f} pairs/s), "
            f"preparation {self.prep_seconds:.1f} s, total {self.seconds:.1f} s; "
            f"{self.decodes} image decodes for {self.image_requests} requests; "
            f"{self.oom_retries} out-of-memory retries, {self.retries} failed batches retried"
        )


class SpeedColumn(ProgressColumn):
    """Pairs per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} pairs/s" if speed else "", style="cyan")


class RunProgress:
    """One bar per task and an overall bar over all pairs seen so far (on stderr)."""

    def __init__(self, n_tasks: int) -> None:
        self.console = Console(stderr=True)
        self.bars = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), SpeedColumn(),
            TimeRemainingColumn(), console=self.console, transient=False,
        )
        self.n_tasks, self.done_tasks = n_tasks, 0
        self.overall = self.bars.add_task(self._overall_label(), total=0)
        self.current: Any = None

    def _overall_label(self) -> str:
        return f"all ({self.done_tasks}/{self.n_tasks} tasks)"

    def __enter__(self) -> Self:
        self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bars.stop()

    def start_task(self, name: str, total: int, done: int = 0) -> None:
        """A bar for a task of `total` pairs, `done` of them already in the cache."""
        self.current = self.bars.add_task(name, total=total, completed=done)
        self.bars.update(self.overall, total=(self.bars.tasks[self.overall].total or 0) + total, advance=done)

    def advance(self, n: int) -> None:
        self.bars.advance(self.current, n)
        self.bars.advance(self.overall, n)

    def finish_task(self) -> None:
        self.done_tasks += 1
        self.bars.update(self.overall, description=self._overall_label())
