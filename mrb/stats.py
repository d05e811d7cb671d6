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
    strata: Sequence[Sequence[float] | np.ndarray], *, resamples: int = BOOTSTRAP_RESAMPLES, level: float = CONFIDENCE, seed: int = SEED
) -> tuple[float, float]:
    """The percentile bootstrap interval of a task's score: the mean over `strata` of each one's mean.

    A plain task is one stratum (its per-query values); a composite task has one per part,
    each resampled on its own (queries drawn with replacement) so every part keeps its weight.
    """
    groups = [np.asarray(s, dtype=np.float64) for s in strata if len(s)]
    if not groups:
        return float("nan"), float("nan")
    rng = np.random.Generator(np.random.PCG64(seed))
    means = np.zeros(resamples)
    for group in groups:
        done = 0
        for rows in _chunks(resamples, group.size):
            means[done : done + rows] += group[rng.integers(0, group.size, size=(rows, group.size))].mean(axis=1)
            done += rows
    means /= len(groups)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


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
        np.asarray(stratum, dtype=np.float64) / (len(task) * len(stratum) * len(tasks))
        for task in tasks
        for stratum in task
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
