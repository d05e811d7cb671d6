"""MRB: the Multimodal Reranking Benchmark — an evaluation harness for universal multimodal rerankers."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# The public API, imported on first use so that `mrb --help`, `mrb models` and `mrb tasks` start fast.
_EXPORTS = {
    "evaluate": "mrb.api",
    "load_results": "mrb.results",
    "TaskScores": "mrb.results",
    "Pair": "mrb.data",
    "Record": "mrb.data",
    "read_pack": "mrb.data",
    "MRBError": "mrb.errors",
    "Reranker": "mrb.rerankers",
    "ListwiseReranker": "mrb.rerankers",
    "Window": "mrb.rerankers",
    "get_reranker": "mrb.rerankers",
    "register": "mrb.rerankers",
    "load_tasks": "mrb.tasks",
}
__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from mrb.api import evaluate as evaluate
    from mrb.data import Pair as Pair
    from mrb.data import Record as Record
    from mrb.data import read_pack as read_pack
    from mrb.errors import MRBError as MRBError
    from mrb.rerankers import ListwiseReranker as ListwiseReranker
    from mrb.rerankers import Reranker as Reranker
    from mrb.rerankers import Window as Window
    from mrb.rerankers import get_reranker as get_reranker
    from mrb.rerankers import register as register
    from mrb.results import TaskScores as TaskScores
    from mrb.results import load_results as load_results
    from mrb.tasks import load_tasks as load_tasks


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mrb' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
