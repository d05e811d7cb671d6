"""Rerankers: the protocols (`Reranker`, and `ListwiseReranker` over windows), the adapter registry and the named presets."""

from mrb.rerankers.base import CallableReranker, ListwiseReranker, Reranker, Window, as_reranker, register
from mrb.rerankers.presets import PRESETS, Preset, get_reranker

__all__ = [
    "PRESETS",
    "CallableReranker",
    "ListwiseReranker",
    "Preset",
    "Reranker",
    "Window",
    "as_reranker",
    "get_reranker",
    "register",
]
