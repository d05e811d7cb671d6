"""Bootstrap intervals and the paired randomisation test against closed forms and exhaustive enumeration."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrb.stats import bootstrap_ci, paired_randomisation


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(5).random(50)
    low, high = bootstrap_ci([values])
    assert (low, high) == bootstrap_ci([values])
    assert low < values.mean() < high
    assert bootstrap_ci([values], seed=1) != (low, high)


def test_bootstrap_matches_the_normal_interval_on_many_queries():
    values = np.random.default_rng(11).random(400)
    low, high = bootstrap_ci([values], resamples=4000)
    half = 1.959964 * values.std() / math.sqrt(values.size)
    assert (high - low) / 2 == pytest.approx(half, rel=0.08)
    assert (low + high) / 2 == pytest.approx(values.mean(), abs=0.1 * half)


def test_bootstrap_degenerate_inputs():
    assert bootstrap_ci([[0.25] * 7]) == (0.25, 0.25)
    assert all(math.isnan(v) for v in bootstrap_ci([[]]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=5, max_size=40).filter(lambda v: max(v) - min(v) > 0.05))
def test_intervals_narrow_as_queries_grow(values):
    """The same per-query distribution over 4× and 16× as many queries gives narrower intervals."""
    widths = [np.subtract(*reversed(bootstrap_ci([np.tile(values, k)]))) for k in (1, 4, 16)]
    assert widths[0] > widths[1] > widths[2] > 0
    assert widths[2] < 0.4 * widths[0]


def exact_p(tasks: list[list[list[float]]]) -> float:
    """Two-sided p-value over all 2^n sign assignments: the statistic is the mean over tasks of the
    mean over each task's strata of the stratum means (written out, loops only)."""

    def statistic(signed: list[list[list[float]]]) -> float:
        return sum(sum(sum(s) / len(s) for s in task) / len(task) for task in signed) / len(signed)

    observed = abs(statistic(tasks))
    sizes = [len(s) for task in tasks for s in task]
    hits = 0
    for signs in itertools.product((-1, 1), repeat=sum(sizes)):
        it = iter(signs)
        signed = [[[next(it) * d for d in s] for s in task] for task in tasks]
        hits += abs(statistic(signed)) >= observed - 1e-12
    return hits / 2 ** sum(sizes)


@pytest.mark.parametrize(
    "tasks",
    [
        [[[0.1] * 10]],
        [[[0.3, -0.1, 0.2, 0.05, 0.0, 0.4, -0.2, 0.1]]],
        [[[0.2, 0.1, -0.05, 0.3]], [[0.0, -0.1, 0.25, 0.15, 0.05, 0.1]]],
        [[[0.2, 0.1], [0.3, -0.1, 0.05, 0.0]], [[0.1, 0.2, -0.15]]],  # a composite task of two parts
    ],
)
def test_randomisation_agrees_with_exhaustive_enumeration(tasks):
    assert paired_randomisation(tasks) == pytest.approx(exact_p(tasks), abs=0.012)


def test_bootstrap_keeps_each_part_its_weight():
    """A composite of a 3-query part scoring 1 and a 30-query part scoring 0 is worth 0.5, whatever the resample."""
    assert bootstrap_ci([[1.0] * 3, [0.0] * 30]) == (0.5, 0.5)


def test_randomisation_edge_cases():
    assert paired_randomisation([[[0.0, 0.0, 0.0]]]) == 1.0  # identical systems
    assert paired_randomisation([[[0.5] * 10]]) < 0.01
    assert paired_randomisation([[[0.2, -0.1, 0.3]]]) == paired_randomisation([[[0.2, -0.1, 0.3]]])
    assert math.isnan(paired_randomisation([]))


def test_bootstrap_is_scipys_and_keeps_the_hand_written_intervals():
    """scipy.stats.bootstrap with the same seed reproduces MRB 0.1's own resampling (to a unit in the
    last place: scipy takes the percentiles of the same resampled means in another order)."""
    rng = np.random.default_rng(5)
    plain, part = rng.random(37), rng.random(12)
    assert bootstrap_ci([plain]) == pytest.approx((0.4031491270549241, 0.5887767342745125), abs=2e-16)
    assert bootstrap_ci([plain, part]) == pytest.approx((0.3781824920413314, 0.5428393496068052), abs=2e-16)
    assert bootstrap_ci([plain, [0.5]]) == pytest.approx(tuple((v + 0.5) / 2 for v in bootstrap_ci([plain])), abs=1e-15)


def test_weighted_bootstrap():
    values = np.random.default_rng(7).random(40)
    other = np.random.default_rng(8).random(9)
    # scipy draws each stratum's resamples in turn, so a zero weight leaves the first stratum's interval as it is
    assert bootstrap_ci([values, other], weights=[1.0, 0.0]) == bootstrap_ci([values])
    assert bootstrap_ci([[1.0] * 3, [0.0] * 30, [0.5]], weights=[0.25, 0.5, 0.25]) == (0.375, 0.375)
    low, high = bootstrap_ci([values, other], weights=[0.9, 0.1])
    assert low < 0.9 * values.mean() + 0.1 * other.mean() < high
