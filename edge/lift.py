"""What a placement earns, with intervals a careful analyst would sign (pure: no I/O).

The report compares each variant of a placement with its holdout (the visitors who were
eligible and saw the shop's original page). Per arm it needs only sums, so the numbers
can be kept as counters: visitors ``n``, converting visitors ``x``, and the revenue per
visitor as a sum and a sum of squares (:class:`Arm`). From those:

* **conversion rate** ``x / n`` with a **Wilson score** interval (good at small counts
  and near 0, where the textbook Wald interval fails);
* **absolute lift** (difference of rates) with **Newcombe's hybrid score** interval
  (method 10 of Newcombe 1998), built from the two Wilson intervals;
* **relative lift** (``rate_v / rate_h - 1``) and **revenue per visitor** lifts with
  the **delta method**, as GrowthBook's frequentist engine reports them: the variance
  of a ratio of two independent means ``m1/m0`` is ``v1/(n1 m0²) + m1² v0/(n0 m0⁴)``;
* the **sample-ratio mismatch** check: Pearson's chi-square of the arms' visitor counts
  against the configured split; ``srm_p < 0.001`` means the split is broken (a bug in
  assignment or in counting), and no lift should be read until it is fixed;
* a **too small to read** flag: fewer than ``MIN_CONVERSIONS`` conversions in the two
  arms together (GrowthBook's default minimum sample for a metric is of that order)
  or fewer than ``MIN_VISITORS`` visitors in either arm.

The chi-square tail uses the closed forms for integer degrees of freedom (stdlib
``math.erfc`` and a finite sum), exact to floating point; normal quantiles come from
``statistics.NormalDist``. tests/test_lift.py validates the intervals by simulation:
over many A/A experiments the 95% interval excludes zero about 5% of the time, and with
a known true lift it covers that lift about 95% of the time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

__all__ = [
    "MIN_CONVERSIONS",
    "MIN_VISITORS",
    "SRM_THRESHOLD",
    "Arm",
    "Comparison",
    "chi2_sf",
    "compare",
    "newcombe",
    "srm_p",
    "wilson",
]

MIN_CONVERSIONS = 150
"""Fewer conversions than this in a variant and its holdout together: too small to read."""

MIN_VISITORS = 100
"""Fewer visitors than this in either arm: too small to read."""

SRM_THRESHOLD = 0.001
"""A sample-ratio-mismatch p-value below this flags the split as broken."""

Interval = tuple[float, float]


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2)


@dataclass(frozen=True, slots=True)
class Arm:
    """One arm's counters: visitors, converting visitors, and revenue per visitor as a
    sum and a sum of squares (each visitor's revenue inside the attribution window)."""

    visitors: int
    conversions: int
    revenue: float = 0.0
    revenue_sq: float = 0.0

    @property
    def rate(self) -> float | None:
        return self.conversions / self.visitors if self.visitors else None

    @property
    def revenue_per_visitor(self) -> float | None:
        return self.revenue / self.visitors if self.visitors else None

    def revenue_variance(self) -> float | None:
        """The sample variance of revenue per visitor (None below two visitors)."""
        n = self.visitors
        if n < 2:
            return None
        return max(0.0, (self.revenue_sq - self.revenue * self.revenue / n) / (n - 1))


def wilson(successes: int, n: int, level: float = 0.95) -> Interval | None:
    """The Wilson score interval of a proportion (None without trials)."""
    if n <= 0:
        return None
    z = _z(level)
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / n + z2n / (4 * n)) / (1 + z2n)
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return low, high


def newcombe(x1: int, n1: int, x0: int, n0: int, level: float = 0.95) -> Interval | None:
    """Newcombe's hybrid score interval of ``x1/n1 - x0/n0`` (None if an arm is empty)."""
    w1, w0 = wilson(x1, n1, level), wilson(x0, n0, level)
    if w1 is None or w0 is None:
        return None
    p1, p0 = x1 / n1, x0 / n0
    d = p1 - p0
    low = d - math.sqrt((p1 - w1[0]) ** 2 + (w0[1] - p0) ** 2)
    high = d + math.sqrt((w1[1] - p1) ** 2 + (p0 - w0[0]) ** 2)
    return low, high


def _ratio(
    m1: float, v1: float, n1: int, m0: float, v0: float, n0: int, z: float
) -> tuple[float, Interval] | None:
    """Relative difference ``m1/m0 - 1`` of two independent means, delta-method interval."""
    if m0 <= 0 or n1 <= 0 or n0 <= 0:
        return None
    rel = m1 / m0 - 1
    var = v1 / (n1 * m0 * m0) + m1 * m1 * v0 / (n0 * m0**4)
    half = z * math.sqrt(var)
    return rel, (rel - half, rel + half)


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for a chi-square variable with *df* (a positive integer) degrees of freedom."""
    if df < 1:
        raise ValueError("df must be a positive integer")
    if x <= 0:
        return 1.0
    half = x / 2
    if df % 2 == 0:
        term, total = 1.0, 1.0
        for i in range(1, df // 2):
            term *= half / i
            total += term
        return min(1.0, math.exp(-half) * total)
    tail = math.erfc(math.sqrt(half))
    if df == 1:
        return tail
    term = math.sqrt(2 * x / math.pi) * math.exp(-half)
    total = term
    for i in range(1, (df - 1) // 2):
        term *= x / (2 * i + 1)
        total += term
    return min(1.0, tail + total)


def srm_p(counts: Sequence[int], weights: Sequence[float]) -> float | None:
    """Pearson's chi-square p-value of *counts* against the split *weights* (None when
    there is nothing to test: fewer than two arms or no visitors)."""
    if len(counts) != len(weights):
        raise ValueError("one weight per arm")
    if any(c for c, w in zip(counts, weights, strict=True) if w <= 0):
        return 0.0  # visitors in an arm that should have none: as broken as it gets
    pairs = [(c, w) for c, w in zip(counts, weights, strict=True) if w > 0]
    total = sum(c for c, _ in pairs)
    wsum = sum(w for _, w in pairs)
    if len(pairs) < 2 or total == 0:
        return None
    stat = 0.0
    for c, w in pairs:
        expected = total * w / wsum
        stat += (c - expected) ** 2 / expected
    return chi2_sf(stat, len(pairs) - 1)


@dataclass(frozen=True, slots=True)
class Comparison:
    """A variant against the holdout. Rates and revenues per visitor; lifts as
    ``(estimate, (low, high))``, None where the data cannot give one (an empty arm, a
    holdout with no conversions for a relative lift)."""

    variant: Arm
    holdout: Arm
    conversion_rate: float | None
    holdout_rate: float | None
    absolute: tuple[float, Interval] | None
    relative: tuple[float, Interval] | None
    revenue_absolute: tuple[float, Interval] | None
    revenue_relative: tuple[float, Interval] | None
    too_small: bool

    @property
    def significant(self) -> bool:
        """The absolute lift's interval excludes zero (and the sample is readable)."""
        if self.too_small or self.absolute is None:
            return False
        low, high = self.absolute[1]
        return low > 0 or high < 0


def compare(variant: Arm, holdout: Arm, level: float = 0.95) -> Comparison:
    """Everything the report shows for one variant against its holdout."""
    z = _z(level)
    r1, r0 = variant.rate, holdout.rate
    absolute = relative = rev_abs = rev_rel = None
    if r1 is not None and r0 is not None:
        interval = newcombe(
            variant.conversions, variant.visitors, holdout.conversions, holdout.visitors, level
        )
        assert interval is not None
        absolute = (r1 - r0, interval)
        relative = _ratio(
            r1, r1 * (1 - r1), variant.visitors, r0, r0 * (1 - r0), holdout.visitors, z
        )
    v1, v0 = variant.revenue_variance(), holdout.revenue_variance()
    m1, m0 = variant.revenue_per_visitor, holdout.revenue_per_visitor
    if v1 is not None and v0 is not None and m1 is not None and m0 is not None:
        half = z * math.sqrt(v1 / variant.visitors + v0 / holdout.visitors)
        rev_abs = (m1 - m0, (m1 - m0 - half, m1 - m0 + half))
        rev_rel = _ratio(m1, v1, variant.visitors, m0, v0, holdout.visitors, z)
    too_small = (
        variant.conversions + holdout.conversions < MIN_CONVERSIONS
        or min(variant.visitors, holdout.visitors) < MIN_VISITORS
    )
    return Comparison(
        variant=variant,
        holdout=holdout,
        conversion_rate=r1,
        holdout_rate=r0,
        absolute=absolute,
        relative=relative,
        revenue_absolute=rev_abs,
        revenue_relative=rev_rel,
        too_small=too_small,
    )
