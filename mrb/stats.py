"""Uncertainty of per-task means: seeded percentile bootstrap CIs and a paired randomisation test.

Both work on per-query values, draw from numpy's PCG64 with a fixed seed (so a report is
reproducible to the last digit), and resample in chunks so memory stays bounded for large
tasks. See docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

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
    values: Sequence[float] | np.ndarray, *, resamples: int = BOOTSTRAP_RESAMPLES, level: float = CONFIDENCE, seed: int = SEED
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of `values` (queries resampled with replacement)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return float("nan"), float("nan")
    rng = np.random.Generator(np.random.PCG64(seed))
    means = np.concatenate(
        [data[rng.integers(0, data.size, size=(rows, data.size))].mean(axis=1) for rows in _chunks(resamples, data.size)]
    )
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def paired_randomisation(
    differences: Sequence[Sequence[float] | np.ndarray], *, permutations: int = PERMUTATIONS, seed: int = SEED
) -> float:
    """Two-sided p-value that the mean over tasks of the per-task mean difference is 0.

    `differences` holds one array per task of per-query differences (model B − model A on the
    same queries). Under the null each difference is as likely negated, so every resample flips
    the sign of each query's difference at random, within its task; the statistic is the mean
    over tasks of the per-task means (the ALL column's difference). p = (1 + #{|T*| ≥ |T|}) / (1 + R).
    """
    tasks = [np.asarray(d, dtype=np.float64) for d in differences if len(d)]
    if not tasks:
        return float("nan")
    observed = abs(np.mean([d.mean() for d in tasks]))
    rng = np.random.Generator(np.random.PCG64(seed))
    statistic = np.zeros(permutations)
    for d in tasks:
        done = 0
        for rows in _chunks(permutations, d.size):
            signs = rng.integers(0, 2, size=(rows, d.size)) * 2 - 1
            statistic[done : done + rows] += (signs * d).mean(axis=1)
            done += rows
    statistic /= len(tasks)
    extreme = int(np.sum(np.abs(statistic) >= observed - 1e-12))
    return (1 + extreme) / (1 + permutations)
