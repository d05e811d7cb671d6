"""Uncertainty of per-task means: seeded percentile bootstrap CIs and a paired randomisation test.

Both work on per-query values, draw from numpy's PCG64 with a fixed seed (so a report is
reproducible to the last digit), and resample in chunks so memory stays bounded for large
tasks. The interval is scipy's bootstrap; the paired test has no scipy equivalent that
stratifies over tasks and parts. See docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import scipy.stats

BOOTSTRAP_RESAMPLES = 1000
PERMUTATIONS = 10_000
CONFIDENCE = 0.95
SEED = 0
_CHUNK_CELLS = 4_000_000  # random draws held in memory at once


def _chunks(total: int, width: int) -> Iterator[int]:
    """Row counts of successive chunks of a (total × width) draw, each at most _CHUNK_CELLS cells."""
    rows = max(1, _CHUNK_CELLS // max(width, 1))
    for start in range(0, total, rows):
        yield min(rows, total - start)


def bootstrap_ci(
    strata: Sequence[Sequence[float] | np.ndarray],
    *,
    weights: Sequence[float] | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CONFIDENCE,
    seed: int = SEED,
) -> tuple[float, float]:
    """The percentile bootstrap interval of a score that is the mean over `strata` of each one's mean
    (or, with `weights`, their weighted sum: one weight per stratum).

    A plain task is one stratum (its per-query values); a composite task has one per part, each
    resampled on its own (queries drawn with replacement) so every part keeps its weight. This is
    `scipy.stats.bootstrap` over the strata as independent samples (a stratum of one query, which
    scipy does not resample, adds its value as a constant). Empty strata are left out.
    """
    given = [1.0] * len(strata) if weights is None else [float(w) for w in weights]
    kept = [(np.asarray(s, dtype=np.float64), w) for s, w in zip(strata, given) if len(s)]
    if not kept:
        return float("nan"), float("nan")

    def combined(means: Sequence[Any], scale: Sequence[float]) -> Any:
        """The score from the strata's means: their plain mean, or their weighted sum."""
        if weights is None:
            return sum(means) / len(kept)
        return sum(w * m for w, m in zip(scale, means))

    fixed = [(float(g[0]), w) for g, w in kept if g.size == 1]
    varying = [(g, w) for g, w in kept if g.size > 1]
    if not varying:
        value = float(combined([v for v, _ in fixed], [w for _, w in fixed]))
        return value, value
    samples = tuple(g for g, _ in varying)
    scale = [w for _, w in varying] + [w for _, w in fixed]
    # unweighted, the constants enter as one sum (the order of additions of earlier releases, to the last digit)
    constants = [v for v, _ in fixed] if weights is not None else [sum(v for v, _ in fixed)] if fixed else []

    def score(*drawn: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.asarray(combined([np.mean(sample, axis=axis) for sample in drawn] + constants, scale))

    cells = sum(g.size for g in samples)
    result = scipy.stats.bootstrap(
        samples,
        score,
        n_resamples=resamples,
        batch=None if cells * resamples <= _CHUNK_CELLS else max(1, _CHUNK_CELLS // cells),
        vectorized=True,
        axis=-1,
        confidence_level=level,
        method="percentile",
        rng=np.random.Generator(np.random.PCG64(seed)),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_randomisation(
    tasks: Sequence[Sequence[Sequence[float] | np.ndarray]], *, permutations: int = PERMUTATIONS, seed: int = SEED
) -> float:
    """Two-sided p-value that the mean over tasks of the per-task score difference is 0.

    `tasks` holds, per task, its strata (one for a plain task, one per part of a composite),
    each an array of per-query differences (model B − model A on the same queries); a task's
    difference is the mean over its strata of their means, as for its score. Under the null
    each query's difference is as likely negated, so every resample flips each sign at random.
    p = (1 + #{|T*| ≥ |T|}) / (1 + R), with a 1e-12 tolerance for floating-point ties.
    """
    weighted = [
        np.asarray(stratum, dtype=np.float64) / (len(task) * len(stratum) * len(tasks)) for task in tasks for stratum in task
    ]
    contributions = np.concatenate(weighted) if weighted else np.empty(0)
    if contributions.size == 0:
        return float("nan")
    observed = abs(contributions.sum())
    rng = np.random.Generator(np.random.PCG64(seed))
    extreme = 0
    for rows in _chunks(permutations, contributions.size):
        signs = rng.integers(0, 2, size=(rows, contributions.size)) * 2 - 1
        extreme += int(np.sum(np.abs(signs @ contributions) >= observed - 1e-12))
    return (1 + extreme) / (1 + permutations)
