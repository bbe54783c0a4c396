"""edge.lift: the intervals against published values, and by simulation.

The simulations are seeded, so they are exact repeats: over many A/A experiments the
95% interval excludes zero about 5% of the time; with a known true lift it covers it
about 95% of the time; a correct split is flagged by the sample-ratio check about as
often as its threshold says, a broken one always.
"""

from __future__ import annotations

import math
import random

import pytest

from edge.lift import (
    SRM_THRESHOLD,
    Arm,
    chi2_sf,
    compare,
    newcombe,
    srm_p,
    wilson,
)

SIMULATIONS = 2000


def _binomial(rng: random.Random, n: int, p: float) -> int:
    """A binomial draw by geometric gaps between successes (cost ~ n·p, not n)."""
    if p <= 0:
        return 0
    log_q = math.log1p(-p)
    count, position = 0, 0
    while True:
        position += int(math.log(1.0 - rng.random()) / log_q) + 1
        if position > n:
            return count
        count += 1


def _arm(rng: random.Random, n: int, p: float, mean_order: float = 80.0) -> Arm:
    """*n* visitors converting with probability *p*, each order exponential with mean
    *mean_order* (one order per converting visitor)."""
    x = _binomial(rng, n, p)
    orders = [rng.expovariate(1 / mean_order) for _ in range(x)]
    return Arm(n, x, sum(orders), sum(v * v for v in orders))


@pytest.mark.parametrize(
    ("x", "df", "p"),
    [
        (3.841459, 1, 0.05),
        (10.827566, 1, 0.001),
        (5.991465, 2, 0.05),
        (7.814728, 3, 0.05),
        (9.487729, 4, 0.05),
        (11.070498, 5, 0.05),
        (18.307038, 10, 0.05),
        (0.0, 3, 1.0),
    ],
)
def test_chi_square_tail_matches_the_tables(x: float, df: int, p: float) -> None:
    assert chi2_sf(x, df) == pytest.approx(p, rel=1e-5)


def test_wilson_matches_published_values() -> None:
    low, high = wilson(0, 10)
    assert low == 0.0
    assert high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson(5, 10)
    assert (low, high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0, 0) is None


def test_newcombe_matches_his_paper() -> None:
    """Newcombe (1998), example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339."""
    low, high = newcombe(56, 70, 48, 80)
    assert (low, high) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def test_srm_passes_a_fair_split_and_flags_a_broken_one() -> None:
    assert srm_p([5000, 5000], [1, 1]) == pytest.approx(1.0)
    assert srm_p([5000, 5200], [1, 1]) == pytest.approx(0.0477, abs=1e-3)
    assert srm_p([4500, 5500], [1, 1]) < SRM_THRESHOLD
    assert srm_p([9000, 1000], [0.9, 0.1]) == pytest.approx(1.0)
    assert srm_p([10, 5], [1, 0]) == 0.0  # visitors where the split puts none
    assert srm_p([0, 0], [1, 1]) is None


def test_an_empty_holdout_gives_no_lift_rather_than_a_wrong_one() -> None:
    c = compare(Arm(500, 30, 2400.0, 2400.0 * 80), Arm(0, 0))
    assert c.absolute is None and c.relative is None and c.revenue_absolute is None
    assert c.too_small and not c.significant
    c = compare(Arm(500, 30), Arm(500, 0))
    assert c.relative is None  # no conversions in the holdout: no ratio
    assert c.absolute is not None


def test_a_small_sample_is_flagged() -> None:
    assert compare(Arm(400, 20), Arm(400, 10)).too_small
    assert not compare(Arm(4000, 200), Arm(4000, 100)).too_small


def test_a_a_experiments_show_a_lift_about_5_percent_of_the_time() -> None:
    rng = random.Random(20261207)
    false_positive = revenue_false_positive = 0
    for _ in range(SIMULATIONS):
        c = compare(_arm(rng, 2000, 0.05), _arm(rng, 2000, 0.05))
        low, high = c.absolute[1]
        false_positive += low > 0 or high < 0
        low, high = c.revenue_absolute[1]
        revenue_false_positive += low > 0 or high < 0
    assert 0.035 <= false_positive / SIMULATIONS <= 0.065
    assert 0.035 <= revenue_false_positive / SIMULATIONS <= 0.065


def test_a_known_lift_is_covered_about_95_percent_of_the_time() -> None:
    rng = random.Random(7)
    p0, p1, order = 0.05, 0.065, 80.0
    covered = {"absolute": 0, "relative": 0, "revenue": 0, "revenue_relative": 0}
    for _ in range(SIMULATIONS):
        c = compare(_arm(rng, 3000, p1, order), _arm(rng, 3000, p0, order))
        truths = {
            "absolute": (c.absolute, p1 - p0),
            "relative": (c.relative, p1 / p0 - 1),
            "revenue": (c.revenue_absolute, (p1 - p0) * order),
            "revenue_relative": (c.revenue_relative, p1 / p0 - 1),
        }
        for name, (lift, truth) in truths.items():
            low, high = lift[1]
            covered[name] += low <= truth <= high
    for name, hits in covered.items():
        assert 0.93 <= hits / SIMULATIONS <= 0.97, (name, hits / SIMULATIONS)


def test_a_fair_split_trips_the_ratio_check_rarely_and_a_broken_one_always() -> None:
    rng = random.Random(11)
    weights = [0.45, 0.45, 0.10]  # two variants and a 10% holdout
    broken = [0.43, 0.43, 0.14]  # a bug that sends 14% to the holdout
    flagged = broken_flagged = 0
    runs = 1000
    for _ in range(runs):
        for split, tally in ((weights, False), (broken, True)):
            draws = rng.choices(range(3), split, k=3000)
            counts = [draws.count(arm) for arm in range(3)]
            hit = srm_p(counts, weights) < SRM_THRESHOLD
            if tally:
                broken_flagged += hit
            else:
                flagged += hit
    assert flagged <= 5  # 0.1% expected: about 1 in 1,000
    assert broken_flagged >= 0.95 * runs
