"""Error rates and power of the decision rules, simulated over many sweeps:
the confirmatory fixed sequence's familywise error and power, and Holm's."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from sweep.stats.multiplicity import holm
from sweep.stats.simulate.noise import NoiseModel, accuracies


def confirmatory_decisions(
    p_source: np.ndarray, p_target: np.ndarray, *, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised confirmatory rule: (trials, C) p-values at ascending counts ->
    (trials, C) rejected. Each class's counts are tested from the largest down
    at alpha/2, stopping at the first non-rejection; a class that rejects every
    count gives the other class's sequence alpha (tests check this against
    `confirmatory_adjusted`)."""

    def run(p: np.ndarray, level: np.ndarray) -> np.ndarray:
        ok = p[:, ::-1] <= level[:, None]  # largest count first
        return np.cumprod(ok, axis=1)[:, ::-1].astype(bool)

    half = np.full(p_source.shape[0], alpha / 2)
    source, target = run(p_source, half), run(p_target, half)
    source_level = np.where(target.all(axis=1), alpha, alpha / 2)
    target_level = np.where(source.all(axis=1), alpha, alpha / 2)
    source2, target2 = run(p_source, source_level), run(p_target, target_level)
    # A second pass: one sequence completing only with the other's alpha can
    # in turn complete the other.
    source_level = np.where(target2.all(axis=1), alpha, alpha / 2)
    target_level = np.where(source2.all(axis=1), alpha, alpha / 2)
    return run(p_source, source_level), run(p_target, target_level)


def paired_t_p(d: np.ndarray) -> np.ndarray:
    """Two-sided paired t p-values of (trials, S, ...) deltas over axis 1."""
    n = d.shape[1]
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    return 2 * stats.t.sf(np.abs(t), n - 1)


def confirmatory_trial(
    model: NoiseModel,
    source_effects: np.ndarray,
    target_effects: np.ndarray,
    *,
    seeds: int,
    dist: str,
    trials: int,
    alpha: float,
    rng,
) -> tuple[np.ndarray, np.ndarray]:
    """Rejections (trials, C) of the confirmatory rule for given true deltas."""
    out = []
    for effects in (source_effects, target_effects):
        mu = np.concatenate([[60.0], 60.0 + np.asarray(effects, dtype=float)])
        a = accuracies(model, mu, trials=trials, seeds=seeds, dist=dist, rng=rng)
        out.append(paired_t_p(a[..., 1:] - a[..., :1]))
    return confirmatory_decisions(out[0], out[1], alpha=alpha)


def fwer_confirmatory(
    model: NoiseModel, *, seeds: int, dist: str, trials: int, alpha: float, rng
) -> tuple[float, float]:
    """(global null FWER, partial null: effect only at the largest count)."""
    c = len(model.counts) - 1
    zero = np.zeros(c)
    s, t = confirmatory_trial(
        model, zero, zero, seeds=seeds, dist=dist, trials=trials, alpha=alpha, rng=rng
    )
    global_null = float(np.mean(s.any(axis=1) | t.any(axis=1)))
    big = zero.copy()
    big[-1] = -6 * model.delta_sd
    s, t = confirmatory_trial(
        model, big, -big, seeds=seeds, dist=dist, trials=trials, alpha=alpha, rng=rng
    )
    partial = float(np.mean(s[:, :-1].any(axis=1) | t[:, :-1].any(axis=1)))
    return global_null, partial


def power_confirmatory(
    model: NoiseModel,
    effect: float,
    *,
    seeds: int,
    dist: str,
    trials: int,
    alpha: float,
    rng,
) -> float:
    """How often the rule declares the smallest count effective on the source
    when its effect there is `effect` and the larger counts have 3x and 6x it
    (the target has no effect): what `plan` promises."""
    c = len(model.counts) - 1
    effects = -effect * np.array([1.0, 3.0, 6.0, 10.0, 15.0])[:c]
    s, _ = confirmatory_trial(
        model,
        effects,
        np.zeros(c),
        seeds=seeds,
        dist=dist,
        trials=trials,
        alpha=alpha,
        rng=rng,
    )
    return float(np.mean(s[:, 0]))


def power_exploratory(
    model: NoiseModel,
    effect: float,
    m: int,
    *,
    seeds: int,
    dist: str,
    trials: int,
    alpha: float,
    rng,
) -> tuple[float, float]:
    """Holm over m exploratory rows, one with an effect: (simulated power,
    familywise error over the m - 1 null rows)."""
    mu = np.concatenate([[60.0], 60.0 + np.r_[effect, np.zeros(m - 1)]])
    # The rows share one clean replica per seed, as rows at one count do.
    a = accuracies(model, mu, trials=trials, seeds=seeds, dist=dist, rng=rng)
    p = paired_t_p(a[..., 1:] - a[..., :1])
    adjusted = np.apply_along_axis(holm, 1, p)
    rejected = adjusted <= alpha
    return float(rejected[:, 0].mean()), float(rejected[:, 1:].any(axis=1).mean())
