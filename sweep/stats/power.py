"""Power and planning, for the procedure the summary actually uses.

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
import os

import numpy as np
import pandas as pd
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


def _mde_from_se(se: float, df: float, *, alpha: float, power: float) -> float:
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
    return _mde_from_se(sd / math.sqrt(n), n - 1, alpha=alpha, power=power)


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


def plan(
    effect: float,
    sd: float | None = None,
    alpha: float = POWER_ALPHA,
    power: float = POWER_TARGET,
    *,
    results_dir: str | os.PathLike | None = None,
    seeds: tuple[int, ...] | None = None,
) -> pd.DataFrame:
    """Seeds the confirmatory procedure needs to declare `effect` points, by n.

    The power is that of the procedure the summary uses for the source or
    target class at one count: a paired t test at alpha/2 inside its fixed
    sequence (see the module docstring; checked against simulation in
    tests/test_coverage.py). The sd of the paired deltas comes from `sd`, else
    from `results_dir` (pooled over its counts x classes), else DEFAULT_SD.

    Args:
      effect: difference to detect (points).
      sd: sd of paired deltas (points), or None.
      alpha: familywise error rate of the confirmatory family.
      power: wanted power.
      results_dir: a finished sweep to take the sd from.
      seeds: seed numbers to tabulate (default PLAN_SEEDS).

    Returns:
      Rows seeds, power (for `effect`), mde (points at alpha and power), note
      ("needed" on the fewest seeds that reach `power`, "this sweep" on the
      sweep's own); attrs hold effect, sd, sd_source, alpha, test_alpha, power,
      needed.
    """
    from sweep.results import load_results
    from sweep.stats.design import classes_of
    from sweep.stats.summary import pooled_delta_sd, summarize

    if not effect > 0:
        raise SweepError(f"--effect must be positive, got {effect}")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise SweepError("alpha and power must be between 0 and 1")
    if sd is not None and results_dir is not None:
        raise SweepError("give either --sd or a results folder, not both")
    own = None
    if sd is not None:
        source = "given"
    elif results_dir is not None:
        results = load_results(results_dir)
        summary = summarize(results.metrics, classes=classes_of(results.manifest))
        sd = pooled_delta_sd(summary)
        own = int(summary["n_seeds"].max())
        if not np.isfinite(sd):
            raise SweepError(
                f"cannot estimate the sd from {results_dir}: it has {own} usable "
                "seed(s); pass --sd"
            )
        source = f"pooled over {len(summary)} count x class rows of {results_dir}"
    else:
        sd = DEFAULT_SD
        source = "default: a typical per-class paired delta, SimpleCNN on CIFAR-10"
    if not sd > 0:
        raise SweepError(f"--sd must be positive, got {sd}")
    level = row_alpha("confirmatory", alpha=alpha)
    needed = seeds_needed(effect, sd, alpha=level, power=power)
    ns = set(PLAN_SEEDS if seeds is None else seeds) | {needed}
    if own is not None and own >= 2:
        ns.add(own)
    if min(ns) < 2:
        raise SweepError("--seeds must all be at least 2")
    ns = sorted(ns)
    notes = [
        ", ".join(
            t for t, hit in (("needed", n == needed), ("this sweep", n == own)) if hit
        )
        for n in ns
    ]
    table = pd.DataFrame(
        {
            "seeds": ns,
            "power": [paired_power(effect, sd, n, alpha=level) for n in ns],
            "mde": [min_detectable_effect(sd, n, alpha=level, power=power) for n in ns],
            "note": notes,
        }
    )
    table.attrs.update(
        effect=effect,
        sd=sd,
        sd_source=source,
        alpha=alpha,
        test_alpha=level,
        power=power,
        needed=needed,
    )
    return table


def format_plan(table: pd.DataFrame) -> str:
    """The `plan` table as text for the terminal, with its assumptions on top."""
    a = table.attrs
    points = f"{a['effect']:g} point{'' if a['effect'] == 1 else 's'}"
    head = (
        f"sd of paired deltas: {a['sd']:.2f} points ({a['sd_source']})\n"
        f"to declare an effect of {points} on the source or target class at a "
        f"count, familywise alpha {a['alpha']:g}, with power {a['power']:.0%}: "
        f"{a['needed']} seeds\n"
        f"(the confirmatory rule: fixed sequence from the largest count down, each "
        f"class's sequence at alpha/2 = {a['test_alpha']:g}, paired t; power: chance "
        f"it declares {points} at a count once the larger counts are declared; "
        f"mde: smallest effect declared with power {a['power']:.0%})\n"
    )
    body = table.to_string(
        index=False,
        formatters={"power": "{:.3f}".format, "mde": "{:.2f}".format},
    )
    return head + body
