"""Intervals and tests for one count x class: paired t (reported), sign-flip.

The summary reports the t interval (paired t, or Welch for unpaired sweeps) and
the p-value of the same t test, so a p below alpha means the interval excludes
0. The exact sign-flip test is kept as a robustness column: it assumes only that
a delta is as likely negative as positive under the null, but with n seeds it
cannot go below 2 / 2^n. There is no bootstrap interval: at 3-8 seeds its "95%"
interval covers only about 72-90% (docs/statistics.md).
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
from scipy import stats

DEFAULT_N_RESAMPLES = 9999  # bootstrap resamples and Monte Carlo permutations
MAX_EXACT_SEEDS = 16  # sign-flip test enumerates all 2^n patterns up to here
MAX_EXACT_PERMUTATIONS = 100_000  # unpaired label permutations enumerated up to here


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return np.random.default_rng(0) if rng is None else rng


def t_interval(
    x: np.ndarray, *, level: float = 0.95
) -> tuple[float, tuple[float, float]]:
    """Student t interval for the mean (paired deltas: the paired t interval).

    Args:
      x: (n,) observations.
      level: confidence level.

    Returns:
      (mean, (low, high)); the interval is NaN when n < 2.
    """
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return math.nan, (math.nan, math.nan)
    mean = float(x.mean())
    if x.size < 2:
        return mean, (math.nan, math.nan)
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return mean, (mean - float(half), mean + float(half))


def welch_interval(
    x: np.ndarray, y: np.ndarray, *, level: float = 0.95
) -> tuple[float, tuple[float, float]]:
    """Welch interval for mean(x) - mean(y) of two independent samples.

    Args:
      x: (n_x,) e.g. poisoned accuracies.
      y: (n_y,) e.g. clean accuracies.
      level: confidence level.

    Returns:
      (difference, (low, high)); NaN interval when either sample has n < 2.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size == 0 or y.size == 0:
        return math.nan, (math.nan, math.nan)
    diff = float(x.mean() - y.mean())
    se, df = _welch_se_df(x, y)
    if math.isnan(se):
        return diff, (math.nan, math.nan)
    half = float(stats.t.ppf(0.5 + level / 2, df) * se) if se > 0 else 0.0
    return diff, (diff - half, diff + half)


def _welch_se_df(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Standard error of mean(x) - mean(y) and its Welch-Satterthwaite df."""
    if x.size < 2 or y.size < 2:
        return math.nan, math.nan
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    if vx + vy == 0:  # no spread at all: the df formula is 0/0
        return 0.0, float(x.size + y.size - 2)
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    return math.sqrt(vx + vy), float(df)


@functools.lru_cache(maxsize=MAX_EXACT_SEEDS + 1)
def _sign_patterns(n: int) -> np.ndarray:
    """All 2^n sign patterns as a read-only (2^n, n) array of +-1."""
    bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    patterns = (1 - 2 * bits).astype(float)
    patterns.flags.writeable = False
    return patterns


def sign_flip_test(
    deltas: np.ndarray,
    *,
    rng: np.random.Generator | None = None,
    max_exact: int = MAX_EXACT_SEEDS,
    n_resamples: int = DEFAULT_N_RESAMPLES,
) -> tuple[float, str]:
    """Two-sided sign-flip permutation test that paired deltas centre on 0.

    Under the null a delta is as likely negative as positive, so every sign
    pattern is equally likely; p is the share of patterns whose |sum| reaches the
    observed |sum|. Exact over all 2^n patterns for n <= max_exact, else Monte
    Carlo: (1 + hits) / (1 + n_resamples).

    Args:
      deltas: (n,) paired differences.
      rng: generator for the Monte Carlo case.
      max_exact: largest n enumerated exactly.
      n_resamples: Monte Carlo sign patterns.

    Returns:
      (p_value, method).
    """
    d = np.asarray(deltas, dtype=float)
    if d.size == 0:
        return math.nan, "none (no seeds)"
    observed = abs(d.sum())
    # Deltas are multiples of 100/n_test, so ties are common: compare with a
    # tolerance well above float rounding of the sums.
    tol = 1e-9 * np.abs(d).sum()
    if d.size <= max_exact:
        null = np.abs(_sign_patterns(d.size) @ d)
        return float(np.mean(null >= observed - tol)), f"sign-flip exact (2^{d.size})"
    signs = _rng(rng).choice(np.array([-1.0, 1.0]), size=(n_resamples, d.size))
    hits = int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
    p = (hits + 1) / (n_resamples + 1)
    return p, f"sign-flip Monte Carlo ({n_resamples})"


def permutation_test(
    x: np.ndarray,
    y: np.ndarray,
    *,
    rng: np.random.Generator | None = None,
    max_exact: int = MAX_EXACT_PERMUTATIONS,
    n_resamples: int = DEFAULT_N_RESAMPLES,
) -> tuple[float, str]:
    """Two-sided permutation test of labels for mean(x) - mean(y), unpaired.

    p is the share of relabellings (which n_x of the pooled values are called x)
    whose |difference of means| reaches the observed one, as the sign-flip test
    does. Exact over all relabellings when there are at most max_exact, else
    Monte Carlo: (1 + hits) / (1 + n_resamples).

    Args:
      x: (n_x,) e.g. poisoned accuracies.
      y: (n_y,) e.g. clean accuracies.
      rng: generator for the Monte Carlo case.
      max_exact: most relabellings enumerated.
      n_resamples: Monte Carlo relabellings.

    Returns:
      (p_value, method).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size == 0 or y.size == 0:
        return math.nan, "none (no replicas)"
    pooled = np.concatenate([x, y])
    total = pooled.sum()

    def gaps(x_sums: np.ndarray) -> np.ndarray:
        return np.abs(x_sums / x.size - (total - x_sums) / y.size)

    observed = gaps(np.array([x.sum()]))[0]
    tol = 1e-9 * np.abs(pooled).sum()  # ties on the 0.1-point accuracy grid
    if math.comb(pooled.size, x.size) <= max_exact:
        chosen = np.array(list(itertools.combinations(range(pooled.size), x.size)))
        p = float(np.mean(gaps(pooled[chosen].sum(axis=1)) >= observed - tol))
        return p, "permutation exact"
    shuffled = _rng(rng).permuted(np.tile(pooled, (n_resamples, 1)), axis=1)
    hits = int(
        np.count_nonzero(gaps(shuffled[:, : x.size].sum(axis=1)) >= observed - tol)
    )
    p = (hits + 1) / (n_resamples + 1)
    return p, f"permutation Monte Carlo ({n_resamples})"


def t_test(x: np.ndarray) -> float:
    """Two-sided p-value of the one-sample t test that mean(x) = 0 (paired t).

    The test that goes with `t_interval`: p < 1 - level exactly when the interval
    excludes 0. No spread: p is 1 when every value is 0, else 0.

    Args:
      x: (n,) e.g. paired deltas.

    Returns:
      p, NaN when n < 2.
    """
    x = np.asarray(x, dtype=float)
    if x.size < 2:
        return math.nan
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    if sd == 0:  # no spread: no t statistic (e.g. every replica at 0% or 100%)
        return 1.0 if mean == 0 else math.nan
    t = abs(mean) / (sd / math.sqrt(x.size))
    return float(2 * stats.t.sf(t, x.size - 1))


def welch_test(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided p-value of Welch's t test that mean(x) = mean(y) (unpaired)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    se, df = _welch_se_df(x, y)
    if math.isnan(se):
        return math.nan
    diff = float(x.mean() - y.mean())
    if se == 0:
        return 1.0 if diff == 0 else math.nan
    return float(2 * stats.t.sf(abs(diff) / se, df))


def sign_flip_floor(deltas: np.ndarray) -> float:
    """Smallest p the exact sign-flip test can give for these deltas.

    A delta of exactly 0 has no sign to flip, so only the m non-zero deltas
    count: two of the 2^m distinct patterns (all +, all -) always reach the
    observed |sum|, so p >= 2 / 2^m (1 when m = 0).
    """
    m = int(np.count_nonzero(np.asarray(deltas, dtype=float)))
    return min(1.0, 2.0 / 2**m)


def min_attainable_p(n_seeds: int) -> float:
    """2 / 2^n: the sign-flip floor when none of n deltas is exactly 0."""
    return 2.0 / 2**n_seeds if n_seeds >= 1 else math.nan
