"""Power and the minimum detectable effect of the procedure the summary uses.

A confirmatory row (source or target class at one count) is decided by a paired t
test inside a fixed sequence that starts with alpha/2 (sweep.stats.multiplicity):
once the larger counts of its sequence are rejected, its own test runs at
alpha/2, or at alpha when the other class's sequence has rejected every count.
The power stated here is that of the paired t test at alpha/2: exact for the
largest count, and for a smaller count when the larger ones have larger effects
(their rejection is then close to certain); alpha passing can only add to it.
An exploratory row is decided by Holm over m rows, whose first step is a test at
alpha/m: the power stated for it is that test's, exact when only one exploratory
row has an effect and a lower bound otherwise. tests/test_coverage.py checks
both against simulations of the whole procedure.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

from sweep.errors import SweepError

POWER_ALPHA = 0.05  # familywise alpha of the decision rule (and `mde`) ...
POWER_TARGET = 0.8  # ... and the power the `mde` column is for
CONFIRMATORY_SHARE = 0.5  # each of the two fixed sequences starts with alpha/2
# The sd `plan` assumes without --sd or a results folder: a typical sd (points) of
# a paired per-class delta for SimpleCNN on CIFAR-10 (1,000 test images a class
# alone give a binomial sd near 1.4 points per replica).
DEFAULT_SD = 2.0
PLAN_SEEDS = (2, 3, 4, 6, 8, 12, 16, 24, 32)


def row_alpha(
    family: str, *, alpha: float = POWER_ALPHA, m_exploratory: int = 1
) -> float:
    """Two-sided level at which the procedure tests one row of `family`."""
    if family == "confirmatory":
        return alpha * CONFIRMATORY_SHARE
    return alpha / max(1, m_exploratory)


def power_t(effect: float, se: float, df: float, *, alpha: float = 0.05) -> float:
    """Power of a two-sided t test to detect `effect` given its standard error.

    Args:
      effect: true difference (points).
      se: standard error of the estimate (points).
      df: degrees of freedom.
      alpha: two-sided significance level.

    Returns:
      Probability of rejecting (noncentral t, scipy.stats.nct).
    """
    if se == 0:
        return 1.0 if effect != 0 else alpha
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = abs(effect) / se
    # P(T < -c | shift) written as P(T > c | -shift): nct.cdf far in the lower
    # tail returns NaN where sf returns its (negligible) value.
    upper = stats.nct.sf(critical, df, shift)
    lower = stats.nct.sf(critical, df, -shift)
    return float(upper + lower)


def paired_power(effect: float, sd: float, n: int, *, alpha: float = 0.05) -> float:
    """Power of a paired t test with n seeds and delta sd `sd` (points)."""
    if n < 2:
        return math.nan
    return power_t(effect, sd / math.sqrt(n), n - 1, alpha=alpha)


def mde_from_se(se: float, df: float, *, alpha: float, power: float) -> float:
    if not (np.isfinite(se) and np.isfinite(df)) or df <= 0:
        return math.nan
    if se == 0:
        return 0.0

    def gap(shift: float) -> float:
        return power_t(shift, 1.0, df, alpha=alpha) - power

    high = 4.0
    while gap(high) < 0:
        high *= 2
    return float(optimize.brentq(gap, 0.0, high, xtol=1e-10)) * se


def min_detectable_effect(
    sd: float, n: int, *, alpha: float = POWER_ALPHA, power: float = POWER_TARGET
) -> float:
    """Smallest |delta| (points) a paired t test on n seeds detects with `power`.

    Args:
      sd: sd of the paired deltas (points).
      n: seeds.
      alpha: two-sided significance level.
      power: wanted probability of detection.

    Returns:
      The effect in points; NaN when n < 2 or sd is not finite.
    """
    if n < 2 or not np.isfinite(sd):
        return math.nan
    return mde_from_se(sd / math.sqrt(n), n - 1, alpha=alpha, power=power)


def seeds_needed(
    effect: float,
    sd: float,
    *,
    alpha: float = POWER_ALPHA,
    power: float = POWER_TARGET,
    max_seeds: int = 1_000_000,
) -> int:
    """Fewest seeds for a paired t test to detect `effect` with `power`.

    Args:
      effect: the difference to detect (points, > 0).
      sd: sd of the paired deltas (points, > 0).
      alpha: two-sided significance level.
      power: wanted probability of detection.
      max_seeds: give up above this.

    Returns:
      The number of seeds (at least 2).
    """
    if not effect > 0:
        raise SweepError(f"--effect must be positive, got {effect}")
    if not sd > 0:
        raise SweepError(f"--sd must be positive, got {sd}")
    if paired_power(effect, sd, 2, alpha=alpha) >= power:
        return 2
    low, high = 2, 4
    while paired_power(effect, sd, high, alpha=alpha) < power:
        low, high = high, high * 2
        if high > max_seeds:
            raise SweepError(f"detecting {effect} points needs over {max_seeds} seeds")
    while high - low > 1:  # power grows with n: bisect on low < n <= high
        middle = (low + high) // 2
        if paired_power(effect, sd, middle, alpha=alpha) >= power:
            high = middle
        else:
            low = middle
    return high
