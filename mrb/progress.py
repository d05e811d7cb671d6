"""Rich progress bars: one per task and one overall, on stderr."""

from __future__ import annotations

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

STDERR = Console(stderr=True)  # the progress bars' console, which log lines share on a terminal


class SpeedColumn(ProgressColumn):
    """Pairs per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} pairs/s" if speed else "", style="cyan")


class RunProgress:
    """One bar per task and an overall bar over all pairs seen so far (on stderr)."""

    def __init__(self, n_tasks: int) -> None:
        self.console = STDERR
        self.bars = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            SpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
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
