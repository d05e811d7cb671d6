"""Rerankers: the protocol (`Reranker`), the adapter registry and the named presets."""

from mrb.rerankers.base import CallableReranker, Reranker, as_reranker, register
from mrb.rerankers.presets import PRESETS, Preset, get_reranker

__all__ = ["PRESETS", "CallableReranker", "Preset", "Reranker", "as_reranker", "get_reranker", "register"]
