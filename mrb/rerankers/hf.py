"""Plumbing shared by the adapters that load a checkpoint with transformers: runtime options (device
and dtype from `devices`, attention here), optional dependencies, input checks, left padding and the
two-token score read at the last position."""

from __future__ import annotations

import importlib
import importlib.util
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from mrb.data import Record
from mrb.errors import MRBError, exception_chain, hub_failure
from mrb.identity import checkpoint_identity
from mrb.rerankers.base import Reranker
from mrb.rerankers.devices import dtype_name, load_failure, load_pretrained, pick_device, pick_dtype

ATTENTION = ("sdpa", "flash_attention_2", "eager")


def require(module: str, pip_name: str) -> ModuleType:
    """Import an optional dependency, or fail with the `pip install` that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MRBError(f"this model needs the optional package {pip_name!r}: pip install {pip_name}") from exc


def resolve_attention(attn_implementation: str | None, device: torch.device, dtype: torch.dtype) -> str:
    """flash_attention_2 when asked for or, by default, when flash-attn is installed and usable; else sdpa."""
    flash_installed = importlib.util.find_spec("flash_attn") is not None
    if attn_implementation is None or attn_implementation == "auto":
        usable = flash_installed and device.type == "cuda" and dtype in (torch.bfloat16, torch.float16)
        return "flash_attention_2" if usable else "sdpa"
    if attn_implementation not in ATTENTION:
        raise MRBError(f"unknown attention implementation {attn_implementation!r}: use one of {', '.join(ATTENTION)} or auto")
    if attn_implementation == "flash_attention_2" and not flash_installed:
        raise MRBError("attn_implementation flash_attention_2 needs flash-attn: pip install flash-attn --no-build-isolation")
    return attn_implementation


class TransformersReranker(Reranker):
    """Base of the adapters that load one checkpoint with transformers: the options every such adapter
    takes (its signature is what `build` checks options against), provenance, and a `load` hook that
    subclasses fill in to load their tokenizer or processor and model.

    Building one loads nothing: its identity (`settings()`, with a digest of the checkpoint) is known
    at once, so a run can check its packs and its score cache first. The weights load on `ready()`,
    which the runner calls before the first pair it has to score (and `prepare` / `score` call too);
    a checkpoint that does not load is an `MRBError` saying why (`loading_error`).
    """

    def __init__(
        self,
        checkpoint: str,
        *,
        revision: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        attn_implementation: str | None = None,
        max_length: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        if max_length is not None and max_length <= 0:
            raise MRBError(f"max_length must be positive, got {max_length}")
        self.checkpoint = str(checkpoint)
        self.revision = revision
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.attn_implementation = resolve_attention(attn_implementation, self.device, self.dtype)
        self.max_length = max_length
        self.trust_remote_code = trust_remote_code
        self.weights = checkpoint_identity(self.checkpoint, self.revision)
        self.loaded = False
        self._loading = threading.Lock()

    @property
    def load_revision(self) -> str | None:
        """The hub commit identified as the weights (the revision asked for when none was found, or a folder)."""
        return self.weights.get("commit") or self.revision

    def ready(self) -> None:
        """Load the checkpoint, once (thread-safe); an error says what went wrong and how to fix it."""
        with self._loading:
            if self.loaded:
                return
            try:
                self.load()
            except MRBError:
                raise
            except Exception as exc:  # from_pretrained fails in many ways: offline, gated, missing files, wrong classes
                raise MRBError(f"{type(self).__name__} cannot load {self.checkpoint!r}: {loading_error(self, exc)}") from exc
            self.loaded = True

    def load(self) -> None:
        """Load the tokenizer or processor and the model (each adapter's own)."""
        raise NotImplementedError

    def load_model(self, auto_class: Any, source: str, **overrides: Any) -> Any:
        """`auto_class.from_pretrained(source)` with this adapter's revision, dtype, attention and remote-code
        choice, on its device, in eval mode (`devices.load_pretrained`)."""
        kwargs = {
            "revision": self.load_revision,
            "attn_implementation": self.attn_implementation,
            "trust_remote_code": self.trust_remote_code,
            **overrides,
        }
        return load_pretrained(auto_class, source, device=self.device, dtype=self.dtype, **kwargs)

    def load_processor(self, auto_class: Any, source: str | None = None, **overrides: Any) -> Any:
        """The tokenizer or processor: `auto_class.from_pretrained` of `source` (default: the checkpoint) with
        this adapter's revision and remote-code choice."""
        kwargs = {"revision": self.load_revision, "trust_remote_code": self.trust_remote_code, **overrides}
        return auto_class.from_pretrained(source or self.checkpoint, **kwargs)

    def settings(self) -> dict[str, Any]:
        import transformers

        return {
            "name": self.name,
            "adapter": type(self).__name__,
            "checkpoint": self.checkpoint,
            "revision": self.revision,
            "weights": self.weights,
            "device": self.device.type,
            "dtype": dtype_name(self.dtype),
            "attn_implementation": self.attn_implementation,
            "max_length": self.max_length,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        }


EXTRAS = {
    "torchvision": "pip install 'mrb[vision]'",
    "peft": "pip install 'mrb[peft]'",
    "flash_attn": "pip install flash-attn --no-build-isolation",
}


def loading_error(adapter: TransformersReranker, exc: BaseException) -> str:
    """Why a checkpoint did not load, told apart from the exception chain and the hub's offline switch:
    not downloaded while offline, gated, no such revision, no such repository (`hub_failure`), a missing
    package, a transformers too old for its model type, or remote code written for another transformers."""
    import transformers

    hub = hub_failure(exc, adapter.checkpoint, adapter.revision)
    if hub is not None:
        return hub
    chain = exception_chain(exc)
    missing = next((e for e in chain if isinstance(e, ImportError)), None)
    if missing is not None and not adapter.trust_remote_code:
        name = (getattr(missing, "name", None) or "").partition(".")[0]
        fix = EXTRAS.get(name, f"pip install {name}" if name else "install the package it names")
        return f"a package it needs is missing ({load_failure(missing)}): {fix}"
    if any(isinstance(e, ValueError | KeyError) and "does not recognize this architecture" in str(e) for e in chain):
        return (
            f"transformers {transformers.__version__} does not know its model type ({load_failure(exc)}): "
            "pip install -U transformers"
        )
    if adapter.trust_remote_code:
        return (
            f"its own code (trust_remote_code) fails with transformers {transformers.__version__} ({load_failure(exc)}); "
            "it may need the transformers release it was written for"
        )
    return load_failure(exc)


def lora_base(checkpoint: str, revision: str | None) -> str | None:
    """The base model of a PEFT LoRA checkpoint (its adapter_config.json), or None when it is a full model."""
    from transformers.utils import find_adapter_config_file

    found = find_adapter_config_file(checkpoint, revision=revision)
    if found is None:
        return None
    return str(json.loads(Path(found).read_text(encoding="utf-8"))["base_model_name_or_path"])


def pixel_bounds(processor: Any, requested: tuple[int | None, int | None]) -> tuple[int, int]:
    """The (min, max) pixels images are processed within: those requested, a bound left at None the processor's own."""
    size = processor.image_processor.size
    low = requested[0] if requested[0] is not None else size["shortest_edge"]
    high = requested[1] if requested[1] is not None else size["longest_edge"]
    if not 0 < low <= high:
        raise MRBError(f"pixel bounds must satisfy 0 < min_pixels <= max_pixels, got {low} and {high}")
    return low, high


def check_side(record: Record, role: str) -> None:
    """A query or document must carry text or an image."""
    if not record.text and not record.has_image:
        raise MRBError(f"{role} {record.id!r} has neither text nor image")


def side_text(record: Record, role: str, model: str) -> str:
    """The text of a side that a text-only model reads."""
    check_side(record, role)
    if not record.text:
        raise MRBError(f"{role} {record.id!r} has no text, and {model} reads text only")
    return record.text


def left_pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """Stack rows of different lengths into one tensor, padding on the left."""
    return torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(r, dtype=torch.long) for r in rows], batch_first=True, padding_value=value, padding_side="left"
    )


def token_id(tokenizer: Any, token: str) -> int:
    """The vocabulary id of `token` (e.g. "yes"), as the reference code looks it up."""
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or tokenizer.convert_ids_to_tokens(tid) != token:
        raise MRBError(f"the tokenizer has no single token {token!r}, which the scoring rule reads")
    return tid


@torch.inference_mode()
def two_token_scores(model: Any, inputs: Mapping[str, torch.Tensor], token_ids: tuple[int, int]) -> list[float]:
    """p(first token) from the softmax over two tokens' logits at the last position (left-padded inputs).

    Only the last hidden state is projected, and only onto the two rows of the LM head the rule needs,
    instead of computing full-vocabulary logits at every position (benchmarks/last_token_projection.py
    measures the saving); `project_two_tokens` says how.
    """
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    return project_two_tokens(model, model.base_model(**inputs, use_cache=False).last_hidden_state[:, -1], token_ids)


@torch.inference_mode()
def project_two_tokens(model: Any, hidden: torch.Tensor, token_ids: tuple[int, int]) -> list[float]:
    """p(first token) from the softmax over two tokens' logits, given each row's last hidden state (rows × width).

    The projection runs in float32 even for bf16 weights, so the two logits are not rounded to bf16's
    coarse steps (which ties candidates); sigmoid(z₁ − z₂), that softmax, is taken in float64 so that
    confident scores do not collapse into ties either.
    """
    head = model.get_output_embeddings()
    rows = list(token_ids)
    logits = hidden.float() @ head.weight[rows].float().T
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias[rows].float()
    logits = logits.double()
    return torch.sigmoid(logits[:, 0] - logits[:, 1]).tolist()
