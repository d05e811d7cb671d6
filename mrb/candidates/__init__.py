"""MRB's first stage: encoders, exact top-k search, seeded query sampling, and candidate packs with hashes."""

from mrb.candidates.build import BuildResult, build_pack, first_stage_metrics, search
from mrb.candidates.commands import (
    build_candidates,
    ensure_packs,
    pack_folders,
    pack_stats,
    pull_packs,
    push_pack,
    verify_packs,
)
from mrb.candidates.encoders import RETRIEVERS, Encoder, get_encoder
from mrb.candidates.given import import_run, read_run, top_ranked_pack
from mrb.candidates.search import TopK, sample_queries

__all__ = [
    "RETRIEVERS",
    "BuildResult",
    "Encoder",
    "TopK",
    "build_candidates",
    "build_pack",
    "ensure_packs",
    "first_stage_metrics",
    "get_encoder",
    "import_run",
    "pack_folders",
    "pack_stats",
    "pull_packs",
    "push_pack",
    "read_run",
    "sample_queries",
    "search",
    "top_ranked_pack",
    "verify_packs",
]
