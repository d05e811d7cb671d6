"""Vision-feature reuse for the Qwen-VL adapters: what identifies an image, and bounded per-task caches of
an image's tensors — its processed pixels (CPU) and its vision-tower outputs (on the model's device) — so
an image that recurs (a query image in every candidate's row, a document image across queries) is
processed and goes through the tower once while it stays cached."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from PIL import Image

# One image's tensors: a main tensor and its companions. Tower outputs: the merged features (tokens ×
# width) and, for Qwen3-VL, the DeepStack features (one per injected decoder layer; none for the others).
# Processed pixels: the patches (patches × patch values) and the (temporal, height, width) patch grid.
Tensors = tuple[torch.Tensor, tuple[torch.Tensor, ...]]


def image_digest(image: Image.Image) -> str:
    """A digest of the decoded pixels (mode, size, bytes): equal digests, equal tower inputs under one pixel bound."""
    h = hashlib.blake2b(f"{image.mode}:{image.width}x{image.height}:".encode(), digest_size=16)
    h.update(image.tobytes())
    return h.hexdigest()


def _nbytes(tensors: Tensors) -> int:
    main, companions = tensors
    return sum(t.numel() * t.element_size() for t in (main, *companions))


class TensorCache:
    """An LRU of per-image tensors by image key (digest and pixel bounds), bounded by their bytes; `max_bytes`
    0 turns reuse off: every image asked for is computed again, as without a cache."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Tensors] = OrderedDict()
        self.size = 0  # bytes held

    def clear(self) -> None:
        self._items.clear()
        self.size = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, keys: Sequence[str], compute: Callable[[list[int]], list[Tensors]]) -> tuple[list[Tensors], int]:
        """The tensors of each image in `keys` (which may repeat), and how many distinct ones came from the cache.

        `compute(positions)` makes the tensors of the images at those positions of `keys`: with reuse, of the
        first occurrence of each image the cache lacks; without, of every occurrence.
        """
        if not keys:
            return [], 0
        if self.max_bytes == 0:
            return compute(list(range(len(keys)))), 0
        first: dict[str, int] = {}
        for j, key in enumerate(keys):
            first.setdefault(key, j)
        found = {key: self._items[key] for key in first if key in self._items}
        for key in found:
            self._items.move_to_end(key)
        missing = [j for key, j in first.items() if key not in found]
        computed = dict(zip((keys[j] for j in missing), compute(missing))) if missing else {}
        for key, value in computed.items():
            self._put(key, value)
        return [found[key] if key in found else computed[key] for key in keys], len(found)

    def _put(self, key: str, value: Tensors) -> None:
        size = _nbytes(value)
        if size > self.max_bytes:
            return
        self._items[key] = value
        self.size += size
        while self.size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.size -= _nbytes(old)
