"""The threshold question turned round: the poisoned count at which the mean
ASR first reaches X% (default 50 and 90), with its confidence set.

As `sweep.stats.threshold.threshold_set` answers it for accuracy: between
tested counts the mean ASR is taken as linear; each seed gives
(1 - w) r_a + w r_b, and a count is kept when the bootstrap-t test of
`bootstrap_t` (weights 1 - w and w) does not reject "mean ASR = X" there.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sweep.errors import SweepError
from sweep.stats.attack_success.asr_design import as_replica_table, asr_design
from sweep.stats.attack_success.bootstrap_t import (
    _combination,
    _order_bounds,
    _studentized,
    pair_reference,
    reference_pivots,
)
from sweep.stats.attack_success.fiducial_mean import DEFAULT_DRAWS, mean_asr_interval
from sweep.stats.design import check_level
from sweep.stats.intervals import _rng
from sweep.stats.threshold import Pieces, _merge, first_crossing

DEFAULT_ASR_THRESHOLDS = (50.0, 90.0)  # percent
THRESHOLD_GRID = 201  # test points per segment of the threshold inversion


def segment_kept(
    hits_a: np.ndarray,
    hits_b: np.ndarray,
    n_a: np.ndarray,
    n_b: np.ndarray,
    w: np.ndarray,
    threshold: float,
    *,
    level: float,
    draws: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Is "mean ASR = X" kept at the counts (1 - w) c_a + w c_b? Vectorised.

    Between two tested counts the mean ASR is taken as linear; each seed
    gives (1 - w) r_a + w r_b, an unbiased value of the mean there; the test is
    the bootstrap-t of `pair_reference` on those values.

    Args:
      hits_a, hits_b: (..., S) the same seeds at the two counts.
      n_a, n_b: broadcastable stamped images.
      w: (G,) positions in [0, 1].
      threshold: X as a fraction.
      level, draws, rng: as elsewhere.

    Returns:
      (kept (..., G) bool, margin (..., G): <= 0 where kept).
    """
    ref = pair_reference(hits_a, hits_b, n_a, n_b, draws=draws, rng=rng)
    w = np.asarray(w, dtype=float)
    pivots = reference_pivots(ref, 1 - w, w)
    value, se = _combination(ref.observed, 1 - w, w, ref.n_seeds)
    t = _studentized(value, threshold, se)
    q_low, q_high = _order_bounds(pivots, level)
    with np.errstate(invalid="ignore"):  # inf - inf where neither has spread
        margin = np.maximum(t - q_high, q_low - t)
    margin = np.where(np.isnan(margin), np.inf, margin)
    return margin <= 0, margin


def asr_threshold_set(
    table: pd.DataFrame,
    *,
    threshold: float = DEFAULT_ASR_THRESHOLDS[0],
    level: float = 0.95,
    epoch: int | None = None,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
    grid: int = THRESHOLD_GRID,
) -> tuple[float, Pieces]:
    """The poisoned count at which mean ASR first reaches X%, with its set.

    The answer to "how many poisoned images for X% ASR?", as
    `sweep.stats.dose.threshold_set` answers it for accuracy: point, where the
    mean ASR (linear between tested counts) first reaches X; set, the counts
    where the level test of "mean ASR = X" (`segment_kept`, on a grid of
    `grid` points per segment, edges interpolated) does not reject, plus 0 when
    the clean ASR is not significantly below X and "beyond the largest count"
    when the ASR there is not significantly above X (the mean ASR intervals).

    Args:
      table: per-replica ASR rows (`asr_design`) or a backdoor's metrics.
      threshold: X in percent (default 50; the report also asks 90).
      level: confidence level.
      epoch: the epoch analysed; None for the last.
      draws, rng: Monte Carlo draws per segment; generator (None: seed 0).
      grid: test points per segment.

    Returns:
      (count, pieces), as `threshold_set`: inf = beyond the largest count;
      0 = reached already by the clean replicas; ((nan, nan),) with fewer than
      2 seeds or an unpaired sweep; count NaN without clean or poisoned replicas.
    """
    check_level(level)
    if not 0 < threshold < 100:
        raise SweepError(
            f"the ASR threshold must be between 0 and 100, got {threshold}"
        )
    rng = _rng(rng)
    design = asr_design(as_replica_table(table), epoch=epoch)
    x_frac = threshold / 100
    usable = np.isfinite(design.hits).sum(axis=0) > 0
    none = ((math.nan, math.nan),)
    if not usable[0] or usable.sum() < 2:
        return math.nan, none
    hits, n = design.hits[:, usable], design.n[:, usable]
    counts = design.counts[usable].astype(float)
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(hits / n, axis=0)
    # First reaching X upward: where -mean first falls below -X.
    point = float(first_crossing(counts, -mean, -x_frac))
    if (np.isfinite(hits).sum(axis=0) < 2).any() or not design.paired:
        return point, none  # the test pairs the seeds of two counts: twins
    w = np.linspace(0.0, 1.0, grid)
    pieces: list[tuple[float, float]] = []
    for j in range(counts.size - 1):
        both = np.isfinite(hits[:, j]) & np.isfinite(hits[:, j + 1])
        if both.sum() < 2:
            continue
        kept, margin = segment_kept(
            hits[both, j],
            hits[both, j + 1],
            n[both, j],
            n[both, j + 1],
            w,
            x_frac,
            level=level,
            draws=draws,
            rng=rng,
        )
        position = counts[j] + w * (counts[j + 1] - counts[j])
        pieces += _grid_pieces(position, kept, margin)
    ends = []
    for j in (0, counts.size - 1):
        ok = np.isfinite(hits[:, j])
        _, low, high, _ = mean_asr_interval(
            hits[ok, j], n[ok, j], level=level, draws=draws, rng=rng
        )
        ends.append((float(low), float(high)))
    if ends[0][1] >= x_frac:  # clean not significantly below X
        pieces.append((0.0, 0.0))
    if ends[1][0] <= x_frac:  # largest count not significantly above X
        top = counts[-1]
        pieces = [(lo, math.inf if hi >= top - 1e-9 * top else hi) for lo, hi in pieces]
        if not any(hi == math.inf for _, hi in pieces):
            pieces.append((math.inf, math.inf))
    return point, tuple(_merge([(float(lo), float(hi)) for lo, hi in pieces]))


def _grid_pieces(position: np.ndarray, kept: np.ndarray, margin: np.ndarray) -> list:
    """Runs of kept grid points as (low, high), edges interpolated on the margin."""
    pieces = []
    g = kept.size
    i = 0
    while i < g:
        if not kept[i]:
            i += 1
            continue
        k = i
        while k + 1 < g and kept[k + 1]:
            k += 1
        lo = position[i] if i == 0 else _edge(position, margin, i - 1)
        hi = position[k] if k == g - 1 else _edge(position, margin, k)
        pieces.append((float(lo), float(hi)))
        i = k + 1
    return pieces


def _edge(position: np.ndarray, margin: np.ndarray, i: int) -> float:
    """Where the margin crosses 0 between grid points i and i + 1."""
    m0, m1 = margin[i], margin[i + 1]
    if not (np.isfinite(m0) and np.isfinite(m1)) or m0 == m1:
        return float(0.5 * (position[i] + position[i + 1]))
    frac = min(max(-m0 / (m1 - m0), 0.0), 1.0)
    return float(position[i] + frac * (position[i + 1] - position[i]))


def describe_asr_threshold(
    result: tuple[float, Pieces],
    *,
    threshold: float,
    largest_count: int,
    level: float = 0.95,
    tested: tuple[int, ...] | None = None,
) -> str:
    """One sentence answering "at which poisoned count does ASR reach X%?".

    tested: the sweep's counts; when given, a crossing between two of them
    says that the point and set take mean ASR as linear between those two.
    """

    def where(c: float) -> str:
        if c == math.inf:
            return f"beyond the largest count ({largest_count})"
        return f"{c:.1f}"

    def span(lo: float, hi: float) -> str:
        return where(lo) if lo == hi else f"{where(lo)} to {where(hi)}"

    point, pieces = result
    if math.isnan(point):
        return f"ASR threshold {threshold:g}%: no usable replicas."
    if point == math.inf:
        head = (
            f"mean ASR stays below {threshold:g}% within the counts tried "
            f"(up to {largest_count})"
        )
    elif point == 0:
        head = f"mean ASR is at or above {threshold:g}% even when clean"
    else:
        head = f"mean ASR reaches {threshold:g}% at about {point:.1f} poisoned images"
    caveat = ""
    if tested is not None and 0 < point < math.inf:
        below = max(c for c in tested if c <= point)
        above = min(c for c in tested if c >= point)
        if below < above:
            caveat = (f" Between the tested counts {below} and {above} mean ASR is "
                      "taken as linear: the point and set hold only as far as it "
                      "is (test counts in between to check).")
    if pieces and math.isnan(pieces[0][0]):
        return head + " (no set: it needs 2 or more seeds of paired twins)." + caveat
    if not pieces:
        return head + f" (the test rejects every count at {level:.0%})." + caveat
    if len(pieces) == 1 and pieces[0][0] == pieces[0][1] == math.inf:
        return head + f"; the {level:.0%} interval lies entirely beyond it." + caveat
    if len(pieces) == 1:
        return head + f" ({level:.0%} interval {span(*pieces[0])})." + caveat
    return head + (
        f" ({level:.0%} confidence set in {len(pieces)} pieces: "
        + ", ".join(span(*p) for p in pieces)
        + ")."
    ) + caveat


def asr_thresholds(
    table: pd.DataFrame,
    *,
    thresholds: tuple[float, ...] = DEFAULT_ASR_THRESHOLDS,
    level: float = 0.95,
    epoch: int | None = None,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
) -> pd.DataFrame:
    """`asr_threshold_set` for each threshold (default 50% and 90%), as rows.

    Returns:
      Rows threshold (percent), count, low, high (the set's hull), pieces
      (the set), statement (`describe_asr_threshold`).
    """
    rng = _rng(rng)
    design = asr_design(as_replica_table(table), epoch=epoch)
    rows = []
    for x in thresholds:
        point, pieces = asr_threshold_set(
            table, threshold=x, level=level, epoch=epoch, draws=draws, rng=rng
        )
        hull = (pieces[0][0], pieces[-1][1]) if pieces else (math.inf, -math.inf)
        rows.append(
            {
                "threshold": float(x),
                "count": point,
                "low": hull[0],
                "high": hull[1],
                "pieces": pieces,
                "statement": describe_asr_threshold(
                    (point, pieces),
                    threshold=x,
                    largest_count=int(design.counts[-1]),
                    level=level,
                    tested=tuple(int(c) for c in design.counts),
                ),
            }
        )
    return pd.DataFrame(rows)
