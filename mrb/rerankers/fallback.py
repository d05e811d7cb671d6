"""Declared modality fallbacks: how a model that lacks a side of a task is fed it, off by default and always marked.

`Fallback(reranker, "image-only" | "text-only")` feeds an image+text side the model does not take as its image
alone or its text alone; a text or an image side the model lacks stays unsupported (nothing is made up). A
model may also adapt itself to more sides when asked (MonoQwen2-VL's `any_side`, see presets). The results of
an adapted run carry `adapted` (the mode and the model's own adaptation), which the report footnotes, and the
identity carries the fallback, so adapted and plain scores never mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal, get_args

from mrb.errors import MRBError
from mrb.rerankers.base import ALL_SIDES, Reranker
from mrb.tasks import Side, TaskType

if TYPE_CHECKING:
    from mrb.data import Pack, Pair, Record
    from mrb.tasks import TaskSpec

Mode = Literal["image-only", "text-only"]
MODES: tuple[str, ...] = get_args(Mode)


class Fallback(Reranker):
    """`inner` with image+text sides it does not take reduced to their image or their text (`mode`)."""

    query_sides = ALL_SIDES
    document_sides = ALL_SIDES

    def __init__(self, inner: Reranker, mode: Mode) -> None:
        if mode not in MODES:
            raise MRBError(f"unknown fallback {mode!r}: use one of {', '.join(MODES)}")
        self.inner, self.mode = inner, mode
        self.name, self.version = inner.name, inner.version
        self._sides: tuple[Side, Side] = ("it", "it")

    def reduced(self, side: Side, accepted: frozenset[Side]) -> Side:
        """The side the model is fed: `side` itself when it takes it, else an image+text side's image or text."""
        if side in accepted or side != "it":
            return side
        return "i" if self.mode == "image-only" else "t"

    def fed(self, task_type: TaskType) -> tuple[Side, Side]:
        return (
            self.reduced(task_type.query_side, self.inner.query_sides),
            self.reduced(task_type.document_side, self.inner.document_sides),
        )

    def supports(self, task_type: TaskType) -> bool:
        query, document = self.fed(task_type)
        return query in self.inner.query_sides and document in self.inner.document_sides

    def start_task(self, task: TaskSpec, pack: Pack) -> None:
        self._sides = self.fed(task.type)
        self.inner.start_task(task, pack)

    def ready(self) -> None:
        self.inner.ready()

    def _fed(self, pairs: Sequence[Pair]) -> list[Pair]:
        query, document = self._sides
        return [replace(p, query=_as_side(p.query, query), document=_as_side(p.document, document)) for p in pairs]

    def score(self, pairs: Sequence[Pair]) -> Sequence[float]:
        return self.inner.score(self._fed(pairs))

    def prepare(self, pairs: Sequence[Pair]) -> Any:  # used when the inner model prepares ahead (`prepares_ahead`)
        return self.inner.prepare(self._fed(pairs))

    def forward(self, prepared: Any) -> Sequence[float]:
        return self.inner.forward(prepared)

    def settings(self) -> dict[str, Any]:
        return {**self.inner.settings(), "fallback": self.mode}

    def __getattr__(self, name: str) -> Any:  # what the runner asks of the model: max_pixels, counters, batch_group …
        if name.startswith("_") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def native_sides(model: Reranker) -> tuple[frozenset[Side], frozenset[Side]]:
    """The sides a model takes as documented: its class's when it adapts itself to more (it has an `adaptation`),
    else its own (a wrapped callable declares them on the instance)."""
    if getattr(model, "adaptation", ""):
        return type(model).query_sides, type(model).document_sides
    return model.query_sides, model.document_sides


def adaptation(reranker: Reranker, task_type: TaskType) -> str:
    """What was adapted to score `task_type` ("" when the model takes the task's sides as documented): the
    fallback's mode when it reduced a side, and the model's own `adaptation` when it was fed sides it lacks."""
    if not reranker.supports(task_type):
        return ""
    model, mode = (reranker.inner, reranker.mode) if isinstance(reranker, Fallback) else (reranker, "")
    sides = (task_type.query_side, task_type.document_side)
    fed = reranker.fed(task_type) if isinstance(reranker, Fallback) else sides
    query, document = native_sides(model)
    own = getattr(model, "adaptation", "") if not (fed[0] in query and fed[1] in document) else ""
    return "; ".join(part for part in (mode if fed != sides else "", own) if part)


def _as_side(record: Record, side: Side) -> Record:
    if side == "i" and record.text:
        return replace(record, text=None)
    if side == "t" and record.has_image:
        return replace(record, image_bytes=None, stored_image=None)
    return record
