"""Coverage of every interval the tool reports, simulated over many sweeps.

Vectorised NumPy: every trial of a scenario is drawn at once, and the statistics
are computed by the same functions the summary uses (or, where the summary's
function works one sweep at a time, by a vectorised twin that the tests check
against it).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from sweep.stats.simulate.noise import NoiseModel, accuracies
from sweep.stats.threshold import (
    first_crossing,
    threshold_interval_from_moments,
    threshold_interval_unpaired,
)


def _t_half(x: np.ndarray, level: float, axis: int = 1) -> tuple[np.ndarray, ...]:
    n = x.shape[axis]
    mean = x.mean(axis=axis)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * x.std(axis=axis, ddof=1) / math.sqrt(n)
    return mean, half


def coverage_paired_t(
    model: NoiseModel, *, seeds: int, dist: str, trials: int, level: float, rng
) -> float:
    """Paired t interval (ci_low/ci_high) of the delta at one count."""
    mu = np.array([60.0, 52.0])
    a = accuracies(model, mu, trials=trials, seeds=seeds, dist=dist, rng=rng)
    mean, half = _t_half(a[..., 1] - a[..., 0], level)
    return float(np.mean(np.abs(mean - (mu[1] - mu[0])) <= half))


def coverage_percentile_bootstrap(
    model: NoiseModel,
    *,
    seeds: int,
    dist: str,
    trials: int,
    level: float,
    rng,
    resamples: int = 999,
) -> float:
    """Percentile bootstrap of the paired deltas' mean: NOT reported by the tool;
    simulated to show why."""
    mu = np.array([60.0, 52.0])
    trials = min(trials, 2000)
    a = accuracies(model, mu, trials=trials, seeds=seeds, dist=dist, rng=rng)
    d = a[..., 1] - a[..., 0]  # (T, n)
    index = rng.integers(0, seeds, (trials, resamples, seeds))
    means = np.take_along_axis(d[:, None, :], index, axis=2).mean(axis=2)
    low, high = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2], axis=1)
    truth = mu[1] - mu[0]
    return float(np.mean((low <= truth) & (truth <= high)))


def coverage_welch(
    model: NoiseModel, *, seeds: int, dist: str, trials: int, level: float, rng
) -> float:
    """Welch interval of an unpaired sweep (ci_low/ci_high with --unpaired)."""
    mu = np.array([60.0, 52.0])
    a = accuracies(
        model, mu, trials=trials, seeds=seeds, dist=dist, rng=rng, paired=False
    )
    x, y = a[..., 1], a[..., 0]
    vx, vy = x.var(axis=1, ddof=1) / seeds, y.var(axis=1, ddof=1) / seeds
    df = (vx + vy) ** 2 / (vx**2 / (seeds - 1) + vy**2 / (seeds - 1))
    half = stats.t.ppf(0.5 + level / 2, df) * np.sqrt(vx + vy)
    diff = x.mean(axis=1) - y.mean(axis=1)
    return float(np.mean(np.abs(diff - (mu[1] - mu[0])) <= half))


def coverage_band(
    model: NoiseModel, *, seeds: int, dist: str, trials: int, level: float, rng
) -> tuple[float, float]:
    """Pointwise dose-response band, deltas and absolute: worst count's coverage."""
    mu = np.asarray(model.curve)
    a = accuracies(model, mu, trials=trials, seeds=seeds, dist=dist, rng=rng)
    d = a[..., 1:] - a[..., :1]
    mean, half = _t_half(d, level)
    delta_cov = np.mean(np.abs(mean - (mu[1:] - mu[0])) <= half, axis=0)
    mean, half = _t_half(a, level)
    abs_cov = np.mean(np.abs(mean - mu) <= half, axis=0)
    return float(delta_cov.min()), float(abs_cov.min())


def threshold_intervals(
    a: np.ndarray, counts: np.ndarray, threshold: float, level: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised `threshold_count` of paired (trials, S, C) accuracies."""
    n = a.shape[1]
    mean = a.mean(axis=1)
    base = a[..., :-1]
    change = np.diff(a, axis=-1)
    cb, cd = (
        base - base.mean(axis=1, keepdims=True),
        change - change.mean(axis=1, keepdims=True),
    )
    var_a = (cb**2).sum(axis=1) / (n - 1) / n
    cov_ad = (cb * cd).sum(axis=1) / (n - 1) / n
    var_d = (cd**2).sum(axis=1) / (n - 1) / n
    q = np.full(var_a.shape, stats.t.ppf(0.5 + level / 2, n - 1))
    se = a.std(axis=1, ddof=1) / math.sqrt(n)
    end_q = (q[..., 0], q[..., 0])
    return threshold_interval_from_moments(
        counts,
        mean,
        var_a,
        cov_ad,
        var_d,
        q,
        (se[..., 0], se[..., -1]),
        end_q,
        threshold,
    )


def threshold_scenarios(model: NoiseModel) -> dict[str, float]:
    """Thresholds crossed inside the first, middle and last segment, and one
    never reached, on the model's curve made strictly decreasing."""
    mu = np.asarray(model.curve, dtype=float)
    mu = np.minimum.accumulate(mu - 1e-9 * np.arange(mu.size))
    scenarios = {}
    for j in range(mu.size - 1):
        if mu[j] - mu[j + 1] > 1e-6:
            scenarios[
                f"crossed between {model.counts[j]} and {model.counts[j + 1]}"
            ] = 0.5 * (mu[j] + mu[j + 1])
    scenarios["never reached"] = float(mu[-1] - 2 * model.delta_sd)
    return scenarios


def coverage_threshold(
    model: NoiseModel,
    threshold: float,
    *,
    seeds: int,
    dist: str,
    trials: int,
    level: float,
    rng,
) -> float:
    """Threshold count interval: how often it holds the true crossing (linear
    truth between counts; inf when never reached)."""
    counts = np.asarray(model.counts, dtype=float)
    mu = np.minimum.accumulate(np.asarray(model.curve) - 1e-9 * np.arange(counts.size))
    truth = float(first_crossing(counts, mu[None], threshold)[0])
    a = accuracies(model, mu, trials=trials, seeds=seeds, dist=dist, rng=rng)
    _, low, high = threshold_intervals(a, counts, threshold, level)
    if math.isinf(truth):
        return float(np.mean(np.isinf(high)))
    return float(np.mean((low <= truth) & (truth <= high)))


def coverage_threshold_unpaired(
    model: NoiseModel,
    threshold: float,
    *,
    seeds: int,
    dist: str,
    trials: int,
    level: float,
    rng,
    grid: int = 201,
    block: int = 500,
) -> float:
    """Threshold interval of an unpaired sweep (Welch test inversion on a grid),
    in blocks of trials to keep memory small on a shared machine."""
    counts = np.asarray(model.counts, dtype=float)
    mu = np.minimum.accumulate(np.asarray(model.curve) - 1e-9 * np.arange(counts.size))
    truth = float(first_crossing(counts, mu[None], threshold)[0])
    n = np.full(counts.size, seeds)
    hits = 0
    for start in range(0, trials, block):
        size = min(block, trials - start)
        a = accuracies(
            model, mu, trials=size, seeds=seeds, dist=dist, rng=rng, paired=False
        )
        se2 = a.var(axis=1, ddof=1) / seeds
        _, low, high = threshold_interval_unpaired(
            counts, a.mean(axis=1), se2, n, threshold, level, grid=grid
        )
        if math.isinf(truth):
            hits += int(np.isinf(high).sum())
        else:
            hits += int(((low <= truth) & (truth <= high)).sum())
    return hits / trials


def threshold_set_holds(
    a: np.ndarray,
    counts: np.ndarray,
    c: float,
    threshold: float,
    level: float,
    *,
    paired: bool = True,
) -> np.ndarray:
    """Vectorised "is count c in `threshold_set`?" for (trials, S, C) accuracies:
    the t test of m(c) = X (Welch's for unpaired groups) does not reject; for
    c = 0 or inf the one-sided end tests. (trials,) bool."""
    counts = np.asarray(counts, dtype=float)
    n = a.shape[1]
    mean = a.mean(axis=1)
    se = a.std(axis=1, ddof=1) / math.sqrt(n)
    q = stats.t.ppf(0.5 + level / 2, n - 1)
    if math.isinf(c):
        return mean[:, -1] + q * se[:, -1] >= threshold
    j = min(int(np.searchsorted(counts, c, side="right")) - 1, counts.size - 2)
    w = (c - counts[j]) / (counts[j + 1] - counts[j])
    x, y = a[..., j], a[..., j + 1]
    if paired:
        v = (1 - w) * x + w * y
        t = (v.mean(axis=1) - threshold) / (v.std(axis=1, ddof=1) / math.sqrt(n))
        df = np.full(t.shape, n - 1.0)
    else:
        va, vb = x.var(axis=1, ddof=1) / n, y.var(axis=1, ddof=1) / n
        var = (1 - w) ** 2 * va + w**2 * vb
        df = var**2 / ((1 - w) ** 4 * va**2 / (n - 1) + w**4 * vb**2 / (n - 1))
        t = ((1 - w) * x.mean(axis=1) + w * y.mean(axis=1) - threshold) / np.sqrt(var)
    kept = np.abs(t) <= stats.t.ppf(0.5 + level / 2, df)
    if c == counts[0]:
        kept |= mean[:, 0] - q * se[:, 0] <= threshold
    return kept


def coverage_threshold_set(
    model: NoiseModel,
    threshold: float,
    *,
    seeds: int,
    dist: str,
    trials: int,
    level: float,
    rng,
    paired: bool = True,
) -> float:
    """Threshold confidence set (`threshold_set`, what the report states): how
    often it holds the true crossing (linear truth between counts)."""
    counts = np.asarray(model.counts, dtype=float)
    mu = np.minimum.accumulate(np.asarray(model.curve) - 1e-9 * np.arange(counts.size))
    truth = float(first_crossing(counts, mu[None], threshold)[0])
    a = accuracies(
        model, mu, trials=trials, seeds=seeds, dist=dist, rng=rng, paired=paired
    )
    return float(
        np.mean(threshold_set_holds(a, counts, truth, threshold, level, paired=paired))
    )
