"""How many flips push a class below X%: the threshold confidence set.

Answered by inverting the dose-response's t test along the curve (Fieller
1954; the calibration / inverse-regression interval): between two tested
counts c_j < c_{j+1} the true mean accuracy is taken as linear,
m(c) = (1 - w) m_j + w m_{j+1}; each seed gives the unbiased value
(1 - w) a_j + w a_{j+1}, and c is kept when the level-alpha t test of
m(c) = X does not reject. At the true crossing that test has exactly alpha
size under normal seeds, so the set of kept counts covers it with probability
1 - alpha: `threshold_set`, what the report states (one interval, or pieces
where the curve is flat against the noise). Its hull, `threshold_count`, is
conservative: it also holds the set's gaps (simulated 0.96-0.98 at 3-8 seeds
under a real sweep's noise). The one assumption beyond the t test's is
linearity between tested counts, which the report states.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from sweep.stats.design import check_level, class_index, design_of
from sweep.stats.dose_curve import class_table, masked_moments


def crossing(counts: np.ndarray, curve: np.ndarray, threshold: float) -> float:
    """Where a non-increasing curve first falls below `threshold`, interpolated.

    Linear interpolation between the last count at or above the threshold and the
    first one below it.

    Args:
      counts: (C,) ascending counts.
      curve: (C,) non-increasing values (e.g. fitted source accuracy, percent).
      threshold: the level (same units as curve).

    Returns:
      The count; 0.0 if the curve starts below; inf if it never falls below.
    """
    counts, curve = np.asarray(counts, dtype=float), np.asarray(curve, dtype=float)
    below = np.flatnonzero(curve < threshold)
    if below.size == 0:
        return math.inf
    i = int(below[0])
    if i == 0:
        return float(counts[0])
    c0, c1, v0, v1 = counts[i - 1], counts[i], curve[i - 1], curve[i]
    return float(c0 + (v0 - threshold) / (v0 - v1) * (c1 - c0))


def _accepted_hull(
    a: np.ndarray,
    d: np.ndarray,
    var_a: np.ndarray,
    cov_ad: np.ndarray,
    var_d: np.ndarray,
    q: np.ndarray,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest w in [0, 1] the t test of m(w) = X keeps.

    m(w) = a + w d is estimated with variance var_a + 2 w cov_ad + w^2 var_d;
    w is kept when (a + w d - X)^2 <= q^2 var(w), a quadratic inequality in w.
    Every argument broadcasts (vectorised over trials and segments).

    Returns:
      (low, high) in [0, 1], NaN where nothing is kept.
    """
    e = a - threshold
    q2 = q**2
    c2 = d**2 - q2 * var_d
    c1 = 2 * (d * e - q2 * cov_ad)
    c0 = e**2 - q2 * var_a

    def kept(w):
        return c2 * w**2 + c1 * w + c0 <= 1e-12 * (1 + np.abs(c0))

    candidates = [np.where(kept(0.0), 0.0, np.nan), np.where(kept(1.0), 1.0, np.nan)]
    with np.errstate(invalid="ignore", divide="ignore"):
        disc = c1**2 - 4 * c2 * c0
        root = np.sqrt(np.where(disc >= 0, disc, np.nan))
        quad = np.abs(c2) > 1e-12 * (np.abs(c1) + np.abs(c0) + 1e-300)
        r1 = np.where(quad, (-c1 - root) / (2 * c2), -c0 / c1)
        r2 = np.where(quad, (-c1 + root) / (2 * c2), -c0 / c1)
    for r in (r1, r2):
        candidates.append(np.where((r >= 0) & (r <= 1), r, np.nan))
    stack = np.stack(np.broadcast_arrays(*candidates), axis=0)
    with np.errstate(invalid="ignore"):
        any_kept = np.isfinite(stack).any(axis=0)
        low = np.where(
            any_kept, np.nanmin(np.where(any_kept, stack, 0), axis=0), np.nan
        )
        high = np.where(
            any_kept, np.nanmax(np.where(any_kept, stack, 0), axis=0), np.nan
        )
    return low, high


def first_crossing(
    counts: np.ndarray, mean: np.ndarray, threshold: float
) -> np.ndarray:
    """Where (..., C) curves first fall below `threshold`, linear between counts.

    0 where a curve starts below it, inf where it never falls below.
    """
    counts = np.asarray(counts, dtype=float)
    below = mean < threshold
    first = np.argmax(below, axis=-1)
    i = np.maximum(first, 1)
    v0 = np.take_along_axis(mean, (i - 1)[..., None], axis=-1)[..., 0]
    v1 = np.take_along_axis(mean, i[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        point = counts[i - 1] + (v0 - threshold) / (v0 - v1) * (
            counts[i] - counts[i - 1]
        )
    point = np.where(first == 0, 0.0, point)
    return np.where(~below.any(axis=-1), np.inf, point)


def threshold_interval_from_moments(
    counts: np.ndarray,
    mean: np.ndarray,
    var_a: np.ndarray,
    cov_ad: np.ndarray,
    var_d: np.ndarray,
    q: np.ndarray,
    end_se: tuple[np.ndarray, np.ndarray],
    end_q: tuple[np.ndarray, np.ndarray],
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point and test-inversion interval of the threshold count, vectorised.

    Args:
      counts: (C,) ascending tested counts, 0 first.
      mean: (..., C) mean accuracy per count.
      var_a, cov_ad, var_d: (..., C - 1) per segment j: variance of the mean at
        c_j, its covariance with the mean change to c_{j+1}, the variance of
        that change (each already divided by n).
      q: (..., C - 1) t quantile of each segment's test.
      end_se, end_q: standard errors and t quantiles of the mean at count 0 and
        at the largest count, for the two ends ("below already when clean",
        "beyond the largest count").
      threshold: X, percent.

    Returns:
      (point, low, high), each (...): inf = beyond the largest count.
    """
    counts = np.asarray(counts, dtype=float)
    a, d = mean[..., :-1], np.diff(mean, axis=-1)
    low_w, high_w = _accepted_hull(a, d, var_a, cov_ad, var_d, q, threshold)
    width = np.diff(counts)
    with np.errstate(invalid="ignore"):
        low_c = np.nanmin(
            np.where(np.isfinite(low_w), counts[:-1] + low_w * width, np.inf), axis=-1
        )
        high_c = np.nanmax(
            np.where(np.isfinite(high_w), counts[:-1] + high_w * width, -np.inf),
            axis=-1,
        )
    # The ends: below X already when clean, or still above it at the largest.
    below_at_clean = mean[..., 0] - end_q[0] * end_se[0] <= threshold
    above_at_top = mean[..., -1] + end_q[1] * end_se[1] >= threshold
    low_c = np.where(below_at_clean, 0.0, low_c)
    high_c = np.where(below_at_clean, np.maximum(high_c, 0.0), high_c)
    high_c = np.where(above_at_top, np.inf, high_c)
    point = first_crossing(counts, mean, threshold)
    return point, low_c, high_c


def _welch_grid(
    counts: np.ndarray,
    mean: np.ndarray,
    se2: np.ndarray,
    n: np.ndarray,
    threshold: float,
    level: float,
    grid: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Welch's test of m(c) = X on a grid of each segment (unpaired sweeps).

    Returns:
      position (J, G): the grid's counts; kept (..., J, G): not rejected;
      edge (..., J, G - 1): where the test's boundary lies between neighbouring
      grid points, by linear interpolation of the rejection margin.
    """
    w = np.linspace(0.0, 1.0, grid)  # (G,)
    a, b = mean[..., :-1, None], mean[..., 1:, None]  # (..., J, 1)
    va, vb = se2[..., :-1, None], se2[..., 1:, None]
    na, nb = n[:-1, None], n[1:, None]
    var = (1 - w) ** 2 * va + w**2 * vb
    with np.errstate(invalid="ignore", divide="ignore"):
        df = var**2 / ((1 - w) ** 4 * va**2 / (na - 1) + w**4 * vb**2 / (nb - 1))
    df = np.where(np.isfinite(df) & (df > 0), df, np.minimum(na, nb) - 1)
    q = stats.t.ppf(0.5 + level / 2, df)
    gap = ((1 - w) * a + w * b - threshold) ** 2 - q**2 * var  # <= 0: kept
    kept = gap <= 0
    width = np.diff(counts)[:, None]
    position = counts[:-1, None] + w * width  # (J, G)
    # Refine each edge between a kept and a rejected grid point linearly.
    step = gap[..., 1:] - gap[..., :-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.clip(-gap[..., :-1] / step, 0, 1)
    edge = position[:, :-1] + frac * (position[:, 1:] - position[:, :-1])
    return position, kept, edge


def threshold_interval_unpaired(
    counts: np.ndarray,
    mean: np.ndarray,
    se2: np.ndarray,
    n: np.ndarray,
    threshold: float,
    level: float,
    *,
    grid: int = 801,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`threshold_interval_from_moments` for an unpaired sweep, vectorised.

    Counts are independent groups, so the test at c = (1 - w) c_j + w c_{j+1}
    is Welch's: variance (1 - w)^2 se2_j + w^2 se2_{j+1} with its
    Welch-Satterthwaite df, which changes with w; the kept set is found on a
    grid of w per segment, its edges refined by linear interpolation.

    Args:
      counts: (C,) ascending counts, 0 first.
      mean, se2: (..., C) group means and squared standard errors.
      n: (C,) group sizes (each >= 2).
      threshold: X, percent.
      level: interval level.
      grid: points per segment.

    Returns:
      (point, low, high), each (...).
    """
    counts = np.asarray(counts, dtype=float)
    n = np.asarray(n, dtype=float)
    position, kept, edge = _welch_grid(counts, mean, se2, n, threshold, level, grid)
    change = kept[..., 1:] != kept[..., :-1]
    flat = kept.reshape(*kept.shape[:-2], -1)
    pos = np.broadcast_to(position, kept.shape).reshape(flat.shape)
    edges = np.where(change, edge, np.nan).reshape(*change.shape[:-2], -1)
    candidates = np.concatenate([np.where(flat, pos, np.nan), edges], axis=-1)
    with np.errstate(invalid="ignore"):
        some = np.isfinite(candidates).any(axis=-1)
        filled = np.where(np.isfinite(candidates), candidates, 0.0)
        low = np.where(
            some,
            np.min(np.where(np.isfinite(candidates), filled, np.inf), axis=-1),
            np.inf,
        )
        high = np.where(
            some,
            np.max(np.where(np.isfinite(candidates), filled, -np.inf), axis=-1),
            -np.inf,
        )
    end_q = stats.t.ppf(0.5 + level / 2, n[[0, -1]] - 1)
    below_at_clean = mean[..., 0] - end_q[0] * np.sqrt(se2[..., 0]) <= threshold
    above_at_top = mean[..., -1] + end_q[1] * np.sqrt(se2[..., -1]) >= threshold
    low = np.where(below_at_clean, 0.0, low)
    high = np.where(below_at_clean, np.maximum(high, 0.0), high)
    high = np.where(above_at_top, np.inf, high)
    return first_crossing(counts, mean, threshold), low, high


Pieces = tuple[tuple[float, float], ...]


def _quadratic_pieces(c2: float, c1: float, c0: float) -> list[tuple[float, float]]:
    """The w in [0, 1] where c2 w^2 + c1 w + c0 <= 0, as closed pieces.

    Scalar twin of `_accepted_hull`'s inequality: roots are always kept (they
    bound a kept region), so the pieces' hull is `_accepted_hull`'s.
    """

    def kept(w: float) -> bool:
        return c2 * w * w + c1 * w + c0 <= 1e-12 * (1 + abs(c0))

    if not all(map(math.isfinite, (c2, c1, c0))):
        return []
    roots = []
    if abs(c2) > 1e-12 * (abs(c1) + abs(c0) + 1e-300):
        disc = c1 * c1 - 4 * c2 * c0
        if disc >= 0:
            roots = [
                (-c1 - math.sqrt(disc)) / (2 * c2),
                (-c1 + math.sqrt(disc)) / (2 * c2),
            ]
    elif c1 != 0:
        roots = [-c0 / c1]
    roots = [r for r in roots if 0 <= r <= 1]
    breaks = sorted({0.0, 1.0, *roots})
    pieces = [(lo, hi) for lo, hi in zip(breaks, breaks[1:]) if kept(0.5 * (lo + hi))]
    pieces += [(b, b) for b in breaks if (b in roots or kept(b))]
    return _merge(pieces)


def _merge(pieces: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted union of closed pieces, touching ones joined."""
    out: list[tuple[float, float]] = []
    for lo, hi in sorted(pieces):
        if out and lo <= out[-1][1] + 1e-9 * (1 + abs(out[-1][1])):
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _welch_pieces(position: np.ndarray, kept: np.ndarray, edge: np.ndarray) -> list:
    """Pieces of one unpaired sweep's kept grid (J, G), edges interpolated."""
    pieces = []
    g = kept.shape[1]
    for j in range(kept.shape[0]):
        i = 0
        while i < g:
            if not kept[j, i]:
                i += 1
                continue
            k = i
            while k + 1 < g and kept[j, k + 1]:
                k += 1
            lo = position[j, 0] if i == 0 else edge[j, i - 1]
            hi = position[j, -1] if k == g - 1 else edge[j, k]
            pieces.append((float(lo), float(hi)))
            i = k + 1
    return pieces


def threshold_set(
    metrics: pd.DataFrame,
    *,
    class_id: int,
    threshold: float,
    level: float = 0.95,
    epoch: int | None = None,
) -> tuple[float, Pieces]:
    """How many labels must be flipped before a class's accuracy falls below X%,
    with the exact test-inversion confidence set.

    Point: where the mean accuracy, linear between tested counts, first falls
    below `threshold`. Set: the counts where the level t test of "mean
    accuracy = threshold" (seeds' values interpolated the same way) does not
    reject, plus 0 when the clean accuracy is not significantly above the
    threshold and "beyond the largest count" when the accuracy there is not
    significantly below it. The set covers the true crossing with probability
    `level` (simulated: 0.94-0.96 paired at 3-16 seeds, docs/statistics.md);
    it is usually one interval, but where the curve is flat against the seed
    noise the test can keep counts on both sides of a rejected stretch, and
    then it is several pieces. Its hull (`threshold_count`) is conservative.

    Args:
      metrics: the sweep's metrics table.
      class_id: the class (usually the source class).
      threshold: accuracy in percent.
      level: confidence level.
      epoch: the epoch analysed; None for the last.

    Returns:
      (count, pieces): pieces are ascending, disjoint (low, high) counts; inf
      means beyond the largest count tried, (inf, inf) "only beyond it"; 0
      means below the threshold already when clean; ((nan, nan),) with fewer
      than 2 seeds at some count; count NaN too without clean replicas or any
      usable poisoned count.
    """
    check_level(level)
    design = design_of(metrics, epoch=epoch)
    table = class_table(design, class_index(design, class_id))
    n_all = np.isfinite(table).sum(axis=0)
    ok = n_all > 0  # counts whose replicas all diverged drop out of the curve
    none = ((math.nan, math.nan),)
    if not ok[0] or ok.sum() < 2:
        return math.nan, none
    table, counts = table[:, ok], design.counts[ok].astype(float)
    mean, var, n = masked_moments(table)
    point = float(first_crossing(counts, mean, threshold))
    if n.min() < 2:
        return point, none
    if not design.paired:
        position, kept, edge = _welch_grid(
            counts, mean, var / n, n.astype(float), threshold, level, 801
        )
        pieces = _welch_pieces(position, kept, edge)
    else:
        pieces = []
        for j in range(counts.size - 1):
            both = np.isfinite(table[:, j]) & np.isfinite(table[:, j + 1])
            a, b = table[both, j], table[both, j + 1]
            m = int(both.sum())
            if m < 2:
                continue
            cov = np.cov(np.stack([a, b - a]), ddof=1) / m
            q2 = stats.t.ppf(0.5 + level / 2, m - 1) ** 2
            e, d = a.mean() - threshold, (b - a).mean()
            width = counts[j + 1] - counts[j]
            pieces += [
                (counts[j] + lo * width, counts[j] + hi * width)
                for lo, hi in _quadratic_pieces(
                    d * d - q2 * cov[1, 1],
                    2 * (d * e - q2 * cov[0, 1]),
                    e * e - q2 * cov[0, 0],
                )
            ]
    # The ends: below X already when clean, or still above it at the largest.
    end_q = [stats.t.ppf(0.5 + level / 2, n[i] - 1) for i in (0, -1)]
    if mean[0] - end_q[0] * math.sqrt(var[0] / n[0]) <= threshold:
        pieces.append((0.0, 0.0))
    if mean[-1] + end_q[1] * math.sqrt(var[-1] / n[-1]) >= threshold:
        top = counts[-1]
        pieces = [(lo, math.inf if hi >= top - 1e-9 * top else hi) for lo, hi in pieces]
        if not any(hi == math.inf for _, hi in pieces):
            pieces.append((math.inf, math.inf))
    merged = _merge([(float(lo), float(hi)) for lo, hi in pieces])
    return point, tuple(merged)


def threshold_count(
    metrics: pd.DataFrame,
    *,
    class_id: int,
    threshold: float,
    level: float = 0.95,
    epoch: int | None = None,
) -> tuple[float, tuple[float, float]]:
    """`threshold_set` as one interval, its hull: CONSERVATIVE.

    The hull also holds every count in the set's gaps, so it covers the true
    crossing at least `level` of the time, more where the set has gaps
    (simulated under a real sweep's noise, 95% asked: 0.96-0.98 paired at 3-8
    seeds, up to 0.99 with --unpaired; docs/statistics.md). Use
    `threshold_set` for the exact set; the report states that set.

    Args:
      metrics: the sweep's metrics table.
      class_id: the class (usually the source class).
      threshold: accuracy in percent.
      level: the set's level (the hull covers at least this).
      epoch: the epoch analysed; None for the last.

    Returns:
      (count, (low, high)): inf means beyond the largest count tried; 0 means
      below the threshold already when clean; NaN interval with fewer than 2
      seeds at some count; all NaN without clean replicas or any usable
      poisoned count.
    """
    point, pieces = threshold_set(
        metrics, class_id=class_id, threshold=threshold, level=level, epoch=epoch
    )
    if not pieces:
        return point, (math.inf, -math.inf)
    return point, (pieces[0][0], pieces[-1][1])


def describe_threshold(
    result: tuple[float, tuple],
    *,
    threshold: float,
    class_name: str,
    largest_count: int,
    level: float = 0.95,
    conservative: bool = False,
) -> str:
    """One sentence answering the threshold question.

    `result` is `threshold_set`'s (point, pieces), stated as the exact
    confidence set, or `threshold_count`'s (point, (low, high)), stated as the
    conservative interval it is. `conservative` labels the set so too (an
    unpaired sweep with 3 seeds a count: Welch's test covers 96-97.5% there).
    """

    def where(c: float) -> str:
        if c == math.inf:
            return f"beyond the largest count ({largest_count})"
        return f"{c:.1f}"

    def span(lo: float, hi: float) -> str:
        return where(lo) if lo == hi else f"{where(lo)} to {where(hi)}"

    point, spans = result
    exact = len(spans) == 0 or isinstance(spans[0], tuple)
    pieces = tuple(spans) if exact else (tuple(spans),)
    if math.isnan(point):
        return f"{class_name} accuracy threshold {threshold:g}%: no usable replicas."
    if point == math.inf:
        head = (
            f"{class_name} accuracy stays at or above {threshold:g}%: not reached "
            f"within the counts tried (up to {largest_count})"
        )
    elif point == 0:
        head = f"{class_name} accuracy is below {threshold:g}% even when clean"
    else:
        head = (
            f"{class_name} accuracy falls below {threshold:g}% at about "
            f"{point:.1f} flipped labels"
        )
    if pieces and math.isnan(pieces[0][0]):
        return head + " (no interval: fewer than 2 seeds)."
    if not pieces:
        return head + f" (the t test rejects every count at {level:.0%})."
    name = f"{level:.0%} interval"
    tag = f" (conservative: covers at least {level:.0%})"
    if not exact or conservative:
        name += tag
    if len(pieces) == 1 and pieces[0][0] == pieces[0][1] == math.inf:
        return head + f"; the {name} lies entirely beyond it."
    if len(pieces) == 1:
        return head + f" ({name} {span(*pieces[0])})."
    return head + (
        f" ({level:.0%} confidence set{tag if conservative else ''} in "
        f"{len(pieces)} pieces: "
        + ", ".join(span(*p) for p in pieces)
        + ")."
    )
