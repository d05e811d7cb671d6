"""Shared-prefix scoring: rows of a batch that begin alike (a query's candidates) run their common
prefix through the language model once, and only their own suffixes against its key/value cache.

Rows are compared by one key per token: the token id, and for an image token also which image it
shows, so a prefix is shared only where the model would read exactly the same input. Every token
keeps the position it has in its full row (for the Qwen-VL models, the model's own multimodal RoPE
positions of the whole row), so a suffix run against the cache computes what the full row would:
scores equal the unshared path's up to floating-point rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

ImageSpan = tuple[int, int, int]  # first token, last token + 1, index of the image among the batch's distinct images
COUNTERS = ("pairs", "lm_tokens", "prefix_groups", "prefix_tokens_saved")


@dataclass(frozen=True)
class Row:
    """One pair's input to the language model.

    `positions` are the row's position ids, shaped (d, tokens): d = 3 for multimodal RoPE, 1 for plain
    positions. `keys` (default: the ids) are what rows are compared by; `group` says which rows may share
    a prefix (a query's candidates); `images` are the spans of its image tokens, in order.
    """

    ids: list[int]
    positions: torch.Tensor
    group: Hashable
    keys: Sequence[Hashable] | None = None
    images: tuple[ImageSpan, ...] = ()

    def segment(self, start: int, end: int) -> tuple[list[int], torch.Tensor, list[int]]:
        """Tokens start … end − 1: their ids, positions and the images wholly inside them."""
        inside = [image for first, last, image in self.images if start <= first and last <= end]
        return self.ids[start:end], self.positions[:, start:end], inside


@dataclass(frozen=True)
class Pass:
    """One forward pass over left-padded rows; `images` lists the images its rows show, in token order."""

    input_ids: torch.Tensor  # (rows, width)
    attention_mask: torch.Tensor  # (rows, width), 1 on real tokens
    position_ids: torch.Tensor  # (rows, width), or (3, rows, width) for multimodal RoPE
    images: list[int]

    @property
    def tokens(self) -> int:
        """Real (unpadded) tokens in the pass."""
        return int(self.attention_mask.sum())


@dataclass(frozen=True)
class Plan:
    """How a batch goes through the language model: its suffixes (or whole rows), after the prefixes when shared.

    Row i's suffix continues prefix `row_prefix[i]`; `saved` counts the prefix tokens that were not run
    again for a second row, `shared` the prefixes run once for two rows or more.
    """

    suffix: Pass
    prefix: Pass | None = None
    row_prefix: torch.Tensor | None = None
    saved: int = 0
    shared: int = 0

    @property
    def tokens(self) -> int:
        """Real tokens through the language model."""
        return self.suffix.tokens + (self.prefix.tokens if self.prefix is not None else 0)

    def count(self, counters: dict[str, int], pairs: int) -> None:
        """Add this batch to an adapter's `counters`."""
        counters["pairs"] += pairs
        counters["lm_tokens"] += self.tokens
        counters["prefix_groups"] += self.shared
        counters["prefix_tokens_saved"] += self.saved


def common_prefix(rows: Sequence[Sequence[Hashable]]) -> int:
    """The length of the longest common prefix of `rows`, leaving every row at least its last token."""
    limit = min(len(r) for r in rows) - 1
    first = rows[0]
    for j in range(limit):
        key = first[j]
        if any(r[j] != key for r in rows[1:]):
            return j
    return max(limit, 0)


def plan_rows(rows: Sequence[Row], pad_id: int, share: bool) -> Plan:
    """The passes of a batch: with `share`, each group's common prefix once (never splitting an image) and
    every row's suffix after it; without, or when no group of two rows or more shares a token, the whole
    rows in one pass."""
    groups: dict[Hashable, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row.group, []).append(i)
    lengths = {g: _shared_length([rows[i] for i in members]) for g, members in groups.items()}
    if not share or not any(lengths[g] and len(members) > 1 for g, members in groups.items()):
        return Plan(_pass([r.segment(0, len(r.ids)) for r in rows], pad_id))
    Segment = tuple[list[int], torch.Tensor, list[int]]
    prefixes: list[Segment] = []
    suffixes: list[Segment] = [rows[0].segment(0, 0)] * len(rows)  # every one replaced below
    row_prefix = [0] * len(rows)
    saved = shared = 0
    for g, members in groups.items():
        lead, length = rows[members[0]], lengths[g]
        prefixes.append(lead.segment(0, length))
        for i in members:
            row_prefix[i] = len(prefixes) - 1
            suffixes[i] = rows[i].segment(length, len(rows[i].ids))
        saved += length * (len(members) - 1)
        shared += length > 0 and len(members) > 1
    return Plan(_pass(suffixes, pad_id), _pass(prefixes, pad_id), torch.tensor(row_prefix), saved, shared)


def _shared_length(rows: Sequence[Row]) -> int:
    """The length of the rows' common prefix, moved back to the start of an image it would end inside."""
    length = common_prefix([r.keys or r.ids for r in rows])
    for first, last, _ in rows[0].images:
        if first < length < last:
            length = first
    return length


def _pass(segments: Sequence[tuple[list[int], torch.Tensor, list[int]]], pad_id: int) -> Pass:
    width = max(len(ids) for ids, _, _ in segments)
    depth = segments[0][1].shape[0]
    input_ids = torch.full((len(segments), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(segments), width), dtype=torch.long)
    positions = torch.zeros((depth, len(segments), width), dtype=torch.long)
    images: list[int] = []
    for i, (ids, pos, inside) in enumerate(segments):
        start = width - len(ids)
        input_ids[i, start:] = torch.tensor(ids, dtype=torch.long)
        mask[i, start:] = 1
        positions[:, i, start:] = pos
        images += inside
    return Pass(input_ids, mask, positions[0] if depth == 1 else positions, images)


@torch.inference_mode()
def last_hidden_states(body: Any, plan: Plan, extra: Callable[[Pass], dict[str, Any]] = lambda _: {}) -> torch.Tensor:
    """Each row's hidden state at its last token (rows × width), from `body` (the model without its LM head).

    The prefixes run first into a key/value cache, which is then copied out to one entry per row; the
    suffixes run against it, attending to their own prefix (the mask covers cache and suffix). `extra`
    gives the further inputs of a pass (its images' encoder outputs).
    """
    from transformers import DynamicCache

    device = body.device

    def run(p: Pass, mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        out = body(
            input_ids=p.input_ids.to(device),
            attention_mask=mask.to(device),
            position_ids=p.position_ids.to(device),
            **extra(p),
            **kwargs,
        )
        return out.last_hidden_state

    if plan.prefix is None:
        return run(plan.suffix, plan.suffix.attention_mask, use_cache=False)[:, -1]
    assert plan.row_prefix is not None
    cache = DynamicCache(config=body.config)
    run(plan.prefix, plan.prefix.attention_mask, cache=cache, use_cache=True)
    cache.reorder_cache(plan.row_prefix.to(device))  # type: ignore[arg-type]  # a long tensor, typed LongTensor there
    mask = torch.cat([plan.prefix.attention_mask[plan.row_prefix], plan.suffix.attention_mask], dim=1)
    return run(plan.suffix, mask, cache=cache, use_cache=True)[:, -1]
