"""The dose-response: each class's accuracy change against the poisoned count.

The band is pointwise: at each count it is that count's t interval (paired t
for deltas, the one-sample t interval of the seeds' mean accuracy for the
absolute curve), so it carries the coverage the t interval has (tested by
simulation in tests/test_coverage.py and tabulated in docs/statistics.md).
Straight lines between counts are for the eye; the isotonic fit is
descriptive and takes no part in the band. The threshold question ("how many
flips push the class below X%?") is `sweep.stats.threshold`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import optimize, stats

from sweep.stats.design import check_level, class_index, design_of, paired_table


def pava(
    y: np.ndarray, *, weights: np.ndarray | None = None, increasing: bool = True
) -> np.ndarray:
    """Weighted isotonic regression by pool-adjacent-violators, written plainly.

    Args:
      y: (n,) values in order of x.
      weights: (n,) positive weights, or None for equal weights.
      increasing: fit a non-decreasing (else non-increasing) sequence.

    Returns:
      (n,) the monotone sequence closest to y in weighted least squares.
    """
    y = np.asarray(y, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    if not increasing:
        return -pava(-y, weights=w, increasing=True)
    means, totals, lengths = [], [], []
    for value, weight in zip(y, w):
        means.append(value)
        totals.append(weight)
        lengths.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            weight = totals[-2] + totals[-1]
            means[-2] = (means[-2] * totals[-2] + means[-1] * totals[-1]) / weight
            totals[-2] = weight
            lengths[-2] += lengths[-1]
            del means[-1], totals[-1], lengths[-1]
    return np.repeat(means, lengths)


def isotonic_fit(
    y: np.ndarray, *, weights: np.ndarray | None = None, increasing: bool = True
) -> np.ndarray:
    """Weighted isotonic regression: scipy.optimize.isotonic_regression, else pava.

    Args:
      y: (n,) values in order of x.
      weights: (n,) positive weights, or None.
      increasing: direction of the fit.

    Returns:
      (n,) the fitted monotone sequence.
    """
    if hasattr(optimize, "isotonic_regression"):
        return optimize.isotonic_regression(y, weights=weights, increasing=increasing).x
    return pava(y, weights=weights, increasing=increasing)


def monotone_fit(
    y: np.ndarray, *, weights: np.ndarray | None = None
) -> tuple[np.ndarray, bool]:
    """Fit both directions and keep the one with the smaller weighted SSE.

    Args:
      y: (n,) values in order of x.
      weights: (n,) positive weights, or None.

    Returns:
      (fit (n,), increasing); a tie goes to the direction of y[-1] - y[0].
    """
    y = np.asarray(y, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    up = isotonic_fit(y, weights=w, increasing=True)
    down = isotonic_fit(y, weights=w, increasing=False)
    sse_up, sse_down = float(w @ (y - up) ** 2), float(w @ (y - down) ** 2)
    if math.isclose(sse_up, sse_down, rel_tol=1e-12, abs_tol=1e-12):
        increasing = bool(y[-1] >= y[0])
    else:
        increasing = sse_up < sse_down
    return (up if increasing else down), increasing



def masked_moments(table: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per column of (S, C): mean, sample variance and n over finite entries."""
    ok = np.isfinite(table)
    n = ok.sum(axis=0)
    values = np.where(ok, table, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = values.sum(axis=0) / n
        centred = np.where(ok, table - mean, 0.0)
        var = (centred**2).sum(axis=0) / (n - 1)
    return mean, var, n


def pointwise_band(
    table: np.ndarray, *, level: float, paired: bool, deltas: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean curve and its pointwise t band from a (S, C) seed x count table.

    Args:
      table: accuracy per seed (paired, rows aligned) or per replica (unpaired,
        rows not aligned; NaN padding) and count, NaN where left out.
      level: band level.
      paired: rows are seeds shared by every count.
      deltas: the curve is the change from count 0 (column 0).

    Returns:
      (curve (C,), n (C,), low (C,), high (C,)); NaN band where n < 2.
    """
    if deltas and paired:
        table = table - table[:, :1]  # NaN wherever either twin is out
    mean, var, n = masked_moments(table)
    se2 = var / np.maximum(n, 1)
    if deltas and not paired:  # difference of independent means: Welch
        mean = mean - mean[0]
        se2 = se2 + se2[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            df = se2**2 / (
                (var / np.maximum(n, 1)) ** 2 / (n - 1)
                + (var[0] / n[0]) ** 2 / (n[0] - 1)
            )
        df[0] = np.inf
        ok = (n >= 2) & (n[0] >= 2)
    else:
        df = (n - 1).astype(float)
        ok = n >= 2
    q = np.full(mean.shape, np.nan)
    q[ok] = stats.t.ppf(0.5 + level / 2, np.where(df[ok] > 0, df[ok], 1))
    half = q * np.sqrt(np.where(ok, se2, np.nan))
    half = np.where(ok & (se2 == 0), 0.0, half)
    if deltas:
        half[0] = 0.0  # the clean delta is 0 by definition
    return mean, n, mean - half, mean + half


def dose_response(
    metrics: pd.DataFrame,
    *,
    class_id: int,
    level: float = 0.95,
    epoch: int | None = None,
    increasing: bool | None = None,
    absolute: bool = False,
) -> pd.DataFrame:
    """Mean delta of one class against count, its pointwise t band and a fit.

    The band is pointwise: at each count the paired t interval of the mean delta
    (Welch for unpaired sweeps), or with `absolute` the t interval of the mean
    accuracy, the same intervals as summary.parquet's ci_low/ci_high. The fit is
    isotonic over the counts (count 0 included), weighted by seeds, in direction
    `increasing` (None: whichever fits better); it is descriptive only.

    Args:
      metrics: the sweep's metrics table.
      class_id: the class.
      level: band level.
      epoch: the epoch analysed; None for the last.
      increasing: fit direction, or None to choose by SSE.
      absolute: the curve is the mean accuracy (percent) instead of the delta.

    Returns:
      One row per count: count, n_seeds, delta_mean (accuracy_mean when
      absolute), band_low, band_high, fit, increasing, band ("pointwise").
    """
    check_level(level)
    design = design_of(metrics, epoch=epoch)
    k = class_index(design, class_id)
    table = class_table(design, k)
    curve, n, low, high = pointwise_band(
        table, level=level, paired=design.paired, deltas=not absolute
    )
    ok = np.isfinite(curve) & (n > 0)
    fit = np.full(curve.shape, np.nan)
    if ok.sum() >= 2:
        weights = n[ok].astype(float)
        if increasing is None:
            fit[ok], increasing = monotone_fit(curve[ok], weights=weights)
        else:
            fit[ok] = isotonic_fit(curve[ok], weights=weights, increasing=increasing)
    return pd.DataFrame(
        {
            "count": design.counts,
            "n_seeds": n.astype(int),
            "accuracy_mean" if absolute else "delta_mean": curve,
            "band_low": low,
            "band_high": high,
            "fit": fit,
            "increasing": increasing,
            "band": "pointwise",
        }
    )


def class_table(design, k: int) -> np.ndarray:
    """(S, C) accuracies of class column k; unpaired groups padded with NaN."""
    if design.paired:
        return paired_table(design, k)
    rows = max(g.shape[0] for g in design.accuracy)
    table = np.full((rows, len(design.accuracy)), np.nan)
    for i, group in enumerate(design.accuracy):
        table[: group.shape[0], i] = group[:, k]
    return table
