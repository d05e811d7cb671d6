"""Device and dtype defaults shared by the model adapters."""

from __future__ import annotations

from typing import Any

import torch

from mrb.errors import MRBError

_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "fp32": torch.float32,
    "float32": torch.float32,
}


def pick_device(device: str | None) -> torch.device:
    """The requested device, or CUDA when available, else MPS, else CPU."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MRBError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__})")
    return torch.device(device)


def pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """bf16 on GPU and fp32 on CPU unless the user names one (bf16, fp16, fp32)."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise MRBError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(_DTYPES))}")
    return _DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    """``bfloat16`` for torch.bfloat16 (as provenance and settings record it)."""
    return str(dtype).removeprefix("torch.")


def load_pretrained(auto_class: Any, source: str, *, device: torch.device, dtype: torch.dtype, **kwargs: Any) -> Any:
    """`auto_class.from_pretrained(source, dtype=dtype, **kwargs)` moved to `device` (no `device_map`, which
    would need accelerate), in eval mode."""
    return auto_class.from_pretrained(source, dtype=dtype, **kwargs).to(device).eval()


def load_failure(exc: BaseException) -> str:
    """The first line of a loading error, with its type (transformers' messages run to many lines)."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
