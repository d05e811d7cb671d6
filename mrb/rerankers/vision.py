"""Vision-feature reuse for the Qwen-VL adapters: what identifies an image, and a bounded per-task cache
of vision-tower outputs so an image that recurs (a query image in every candidate's row, a document
image across queries) goes through the tower once while it stays cached."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from PIL import Image

# One image's tower output: its merged features (tokens × width) and, for Qwen3-VL, its DeepStack
# features (one tensor per injected decoder layer; empty for the others).
Features = tuple[torch.Tensor, tuple[torch.Tensor, ...]]


def image_digest(image: Image.Image) -> str:
    """A digest of the decoded pixels (mode, size, bytes): equal digests, equal tower inputs under one pixel bound."""
    h = hashlib.blake2b(f"{image.mode}:{image.width}x{image.height}:".encode(), digest_size=16)
    h.update(image.tobytes())
    return h.hexdigest()


def _nbytes(features: Features) -> int:
    merged, deepstack = features
    return sum(t.numel() * t.element_size() for t in (merged, *deepstack))


class FeatureCache:
    """An LRU of tower outputs by image key (digest and pixel bounds), bounded by their bytes (on the model's
    device); `max_bytes` 0 turns reuse off: every image a pass needs goes through the tower, as without a cache."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Features] = OrderedDict()
        self.size = 0  # bytes held

    def clear(self) -> None:
        self._items.clear()
        self.size = 0

    def __len__(self) -> int:
        return len(self._items)

    def features(self, keys: Sequence[str], compute: Callable[[list[int]], list[Features]]) -> tuple[list[Features], int]:
        """The features of each image in `keys` (which may repeat), and how many distinct ones came from the cache.

        `compute(positions)` runs the tower on the images at those positions of `keys`: with reuse, on the
        first occurrence of each image the cache lacks; without, on every occurrence.
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

    def _put(self, key: str, value: Features) -> None:
        size = _nbytes(value)
        if size > self.max_bytes:
            return
        self._items[key] = value
        self.size += size
        while self.size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.size -= _nbytes(old)
