"""`RunOptions`: how a run hands pairs to the model (the fields `mrb run` makes its flags from)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from mrb.errors import MRBError

Overwrite = Literal["never", "missing", "always"]
OVERWRITE_MODES: tuple[str, ...] = get_args(Overwrite)


@dataclass(frozen=True)
class RunOptions:
    """How pairs reach the model; none of these changes a score. Each field's `help` is its `mrb run` flag's."""

    batch_size: int = field(default=32, metadata={"help": "most pairs in one batch"})
    max_batch_tokens: int | None = field(
        default=None, metadata={"help": "most padded tokens in one batch (pairs × longest pair; default: no budget)"}
    )
    workers: int = field(
        default=1, metadata={"help": "threads preparing batches (tokens, images) ahead of the model (0: inline)"}
    )
    overwrite: Overwrite = field(
        default="missing",
        metadata={
            "help": "never: keep tasks with results; missing: score only what the cache lacks; always: rescore, "
            "and replace a different model of the same name"
        },
    )
    cache_dir: Path | None = field(default=None, metadata={"help": "score cache folder (default: OUTPUT/cache)"})
    image_cache_mb: int = field(default=1024, metadata={"help": "bound on the decoded images kept per task, in MB"})

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise MRBError(f"batch size must be at least 1, got {self.batch_size}")
        if self.max_batch_tokens is not None and self.max_batch_tokens < 1:
            raise MRBError(f"--max-batch-tokens must be at least 1, got {self.max_batch_tokens}")
        if self.workers < 0:
            raise MRBError(f"--workers must be 0 or more, got {self.workers}")
        if self.image_cache_mb < 0:
            raise MRBError(f"--image-cache-mb must be 0 or more, got {self.image_cache_mb}")
        if self.overwrite not in OVERWRITE_MODES:
            raise MRBError(f"--overwrite must be one of {', '.join(OVERWRITE_MODES)}, got {self.overwrite!r}")
