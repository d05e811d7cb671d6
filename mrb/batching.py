"""Pairs for the model: decoded-image sharing, token estimates and length-aware batches.

A task's pairs reference shared records; the runner gives them one bounded `ImageCache` per
task as their image source (`Record.with_source`), so a query image shared by all its
candidates, or a corpus image that recurs across queries, is decoded once while it stays in
the cache. Batches are planned longest first under a token budget; the runner restores the
original order when it stores the scores.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from PIL import Image

from mrb.data import Pair, Record, open_image

PATCH = 28  # pixels per side of one visual token in Qwen-VL-style encoders (14-pixel patches, 2×2 merge)
CHARS_PER_TOKEN = 4
ROLES = {"q": "query", "d": "document"}  # cache roles as error messages name them


class ImageCache:
    """A thread-safe LRU of decoded images, bounded by decoded size in bytes; counts requests and decodes.

    Images are decoded within `max_pixels`, the reranker's bound. With `expect`, the cache also knows
    how many requests each image will get in this task and drops an image after its last one, so it
    holds only images still to be used. `side("q")` / `side("d")` is the image source of a task's
    queries / documents (ids are keyed per side: a query and a document may share one).
    """

    def __init__(self, max_bytes: int, max_pixels: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels  # the reranker's bound: larger images are decoded reduced (`decode_image`)
        self._items: OrderedDict[tuple[str, str], Image.Image] = OrderedDict()
        self._uses: dict[tuple[str, str], int] = {}
        self._size = 0
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], threading.Event] = {}
        self._sizes: dict[tuple[str, str], int | None] = {}  # decoded bytes, from the header, of images prefetch saw
        self.decodes = 0
        self.requests = 0

    def expect(self, uses: Counter[tuple[str, str]]) -> None:
        """How many times each (role, id) will be requested from now on."""
        with self._lock:
            self._uses = dict(uses)

    def side(self, role: str) -> SideSource:
        """The image source of one side's records (``q`` or ``d``)."""
        return SideSource(self, role)

    def get(self, role: str, record: Record) -> Image.Image | None:
        """The decoded image of `record` (as role ``q`` or ``d``); decoded at most once while cached."""
        return self._fetch(role, record, use=True)

    def warm(self, role: str, record: Record) -> None:
        """Decode ahead of use (prefetch), not counted as a request; skipped when the image would not fit
        beside what the cache holds, since it would be gone, and decoded again, by the time it is used."""
        key = (role, record.id)
        with self._lock:
            if key in self._items or key in self._pending:
                return
            room = self.max_bytes - self._size
            size = self._sizes.get(key)
        if size is None:
            size = decoded_size(record, self.max_pixels)
            with self._lock:
                self._sizes[key] = size
        if size is not None and size <= room:
            self._fetch(role, record, use=False)

    def _fetch(self, role: str, record: Record, use: bool) -> Image.Image | None:
        if not record.has_image:
            return None
        key = (role, record.id)
        if use:
            with self._lock:
                self.requests += 1
        while True:
            with self._lock:
                if key in self._items:
                    image = self._items[key]
                    self._items.move_to_end(key)
                    if use:
                        self._used(key)
                    return image
                waiting = self._pending.get(key)
                if waiting is None:
                    self._pending[key] = threading.Event()
                    break
            waiting.wait()  # another thread is decoding this image
        try:
            decoded = record.decode(self.max_pixels, ROLES[role])
            assert decoded is not None
            image = decoded
            with self._lock:
                self.decodes += 1
                self._put(key, image)
                if use:
                    self._used(key)
            return image
        finally:
            with self._lock:
                self._pending.pop(key).set()

    def _used(self, key: tuple[str, str]) -> None:
        left = self._uses.get(key)
        if left is None:
            return
        if left > 1:
            self._uses[key] = left - 1
            return
        del self._uses[key]
        image = self._items.pop(key, None)
        if image is not None:
            self._size -= _nbytes(image)

    def _put(self, key: tuple[str, str], image: Image.Image) -> None:
        size = _nbytes(image)
        if size > self.max_bytes:
            return
        self._items[key] = image
        self._size += size
        while self._size > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._size -= _nbytes(old)


def _nbytes(image: Image.Image) -> int:
    return image.width * image.height * len(image.getbands())


@dataclass(frozen=True, slots=True)
class SideSource:
    """One side's view of an `ImageCache`: what `Record.image()` calls for the records the runner hands out."""

    cache: ImageCache
    role: str  # "q" or "d"

    def image(self, record: Record, max_pixels: int | None, role: str) -> Image.Image | None:
        """The cached image; a request for another bound than the cache's is decoded on its own, uncached."""
        if max_pixels is not None and max_pixels != self.cache.max_pixels:
            return record.decode(max_pixels, role)
        return self.cache.get(self.role, record)


def decoded_size(record: Record, max_pixels: int | None) -> int | None:
    """The bytes of `record`'s image decoded as RGB (within `max_pixels` when it is over PIL's limit), from its header."""
    size = image_size(record)
    if size is None:
        return None
    pixels = size[0] * size[1]
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and pixels > limit and max_pixels is not None:
        pixels = min(pixels, max_pixels * 4)  # decoded at reduced size: about max_pixels, a JPEG draft at most 4× that
    return 3 * pixels


def image_size(record: Record) -> tuple[int, int] | None:
    """Width and height from the image header only (no decoding); None without an image or when unreadable."""
    data = record.encoded_image()
    if data is None:
        return None
    try:
        img, _ = open_image(data)
    except OSError:
        return None
    with img:
        return img.size


def token_estimator(max_pixels: int | None) -> Callable[[Record], int]:
    """Estimated tokens of one side: text at ~4 characters a token plus one visual token per 28×28
    pixels (the image scaled down to `max_pixels` first when it is larger)."""

    def estimate(record: Record) -> int:
        tokens = math.ceil(len(record.text or "") / CHARS_PER_TOKEN)
        size = image_size(record)
        if size is not None:
            pixels = size[0] * size[1]
            if max_pixels is not None:
                pixels = min(pixels, max_pixels)
            tokens += max(1, math.ceil(pixels / PATCH**2))
        return tokens

    return estimate


def length_bucket(tokens: int) -> int:
    """`tokens` rounded up to a step of 1/16 to 1/8 of it (16 → 16, 300 → 320, 1025 → 1152)."""
    step = 1 << max(0, tokens.bit_length() - 4)
    return -(-tokens // step) * step


def plan_batches(
    lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None, groups: Sequence[Hashable] | None = None
) -> list[list[int]]:
    """Indices of `lengths` in batches, longest first.

    Without `groups`, pairs are ordered by length bucket (within ~10%), longest first, then by index. With
    `groups` (per pair, what it shares with others: its query, whose prefix and image every candidate
    repeats, or its document image), a group's pairs stay together: groups in the bucket of their longest
    pair, longest first, and within a group longest first, so a shared prefix or image is used by one run
    of batches and can leave the caches behind it. A batch holds at most `batch_size` pairs and, with a
    budget, at most `max_batch_tokens` padded tokens (its pair count times its longest pair); a pair longer
    than the budget goes alone.
    """
    if groups is None:
        order = sorted(range(len(lengths)), key=lambda i: (-length_bucket(lengths[i]), i))
    else:
        top: dict[Hashable, int] = {}
        first: dict[Hashable, int] = {}
        for i, (group, length) in enumerate(zip(groups, lengths)):
            top[group] = max(top.get(group, 0), length_bucket(length))
            first.setdefault(group, i)
        order = sorted(range(len(lengths)), key=lambda i: (-top[groups[i]], first[groups[i]], -length_bucket(lengths[i]), i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        wider = max(longest, lengths[i])
        full = len(current) >= batch_size or (max_batch_tokens is not None and (len(current) + 1) * wider > max_batch_tokens)
        if current and full:
            batches.append(current)
            current, wider = [], lengths[i]
        current.append(i)
        longest = wider
    if current:
        batches.append(current)
    return batches


def pair_tokens(pairs: Sequence[Pair], estimate: Callable[[Record], int]) -> list[int]:
    """Estimated tokens per pair (instruction, query and document), each record estimated once."""
    memo: dict[tuple[int, str], int] = {}

    def side(role: int, record: Record) -> int:
        key = (role, record.id)
        if key not in memo:
            memo[key] = estimate(record)
        return memo[key]

    return [math.ceil(len(p.instruction) / CHARS_PER_TOKEN) + side(0, p.query) + side(1, p.document) for p in pairs]


def batch_groups(pairs: Sequence[Pair]) -> list[Hashable] | None:
    """Per pair, what the batch plan keeps together by default: the image of the side with more distinct
    images (documents for T→I, queries for I→T), so that each image's uses come in one run of batches and it
    leaves the decoded-image cache after them; None for text pairs (batches by length alone pad least)."""
    query_images = {p.query.id for p in pairs if p.query.has_image}
    doc_images = {p.document.id for p in pairs if p.document.has_image}
    if not query_images and not doc_images:
        return None
    if len(doc_images) >= len(query_images):
        return [("d", p.document.id) for p in pairs]
    return [("q", p.query.id) for p in pairs]
