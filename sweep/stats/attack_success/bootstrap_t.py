"""The paired delta of mean ASR (poisoned minus clean twin) and its test.

The paired t statistic of the seeds' deltas on the natural scale, referred not
to Student's t but to its distribution in sweeps simulated from the twins'
fitted logit-normal binomial model: a parametric bootstrap-t (Efron and
Tibshirani 1993, ch. 12) whose parameters are drawn per arm from the fiducial
distribution of `fiducial_mean` instead of being plugged in. The p-value is
that interval inverted at 0, so p <= 1 - level exactly when the interval
excludes 0. `segment_kept` (the threshold set) uses the same reference with
other weights.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import special

from sweep.stats.attack_success.fiducial_mean import (
    DEFAULT_DRAWS,
    empirical_logit,
    logit_normal_draws,
    logit_normal_mean,
)
from sweep.stats.intervals import _rng

MAX_RHO = 0.99  # |twin correlation| used in the bootstrap-t's simulated twins
DELTA_METHOD = "paired t, logit-normal fiducial bootstrap reference"

class PairReference(NamedTuple):
    """The bootstrap-t reference of two counts a, b over the same seeds.

    theta_a, theta_b: (..., D) fiducial draws of each count's mean ASR;
    simulated: moments of a sweep simulated from each draw (mean_a, mean_b,
    var_a, var_b, cov_ab; each (..., D)); observed: the same moments of the
    data (each (...)); n_seeds: S.
    """

    theta_a: np.ndarray
    theta_b: np.ndarray
    simulated: tuple[np.ndarray, ...]
    observed: tuple[np.ndarray, ...]
    n_seeds: int


def _moments(ra: np.ndarray, rb: np.ndarray) -> tuple[np.ndarray, ...]:
    """(mean_a, mean_b, var_a, var_b, cov_ab) of paired rates over the last axis."""
    da = ra - ra.mean(axis=-1, keepdims=True)
    db = rb - rb.mean(axis=-1, keepdims=True)
    dof = ra.shape[-1] - 1
    return (
        ra.mean(axis=-1),
        rb.mean(axis=-1),
        (da * da).sum(axis=-1) / dof,
        (db * db).sum(axis=-1) / dof,
        (da * db).sum(axis=-1) / dof,
    )


def _pearson_last(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r over the last axis; 0 where either side has no spread."""
    da = a - a.mean(axis=-1, keepdims=True)
    db = b - b.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((da * da).sum(axis=-1) * (db * db).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (da * db).sum(axis=-1) / denominator, 0.0)


def pair_reference(
    hits_a: np.ndarray,
    hits_b: np.ndarray,
    n_a: np.ndarray,
    n_b: np.ndarray,
    *,
    draws: int,
    rng: np.random.Generator,
) -> PairReference:
    """Fit the twins' model to two counts and simulate `draws` sweeps from it.

    Each count's (mu, sigma) is drawn from its own fiducial distribution
    (`logit_normal_draws`; drawing the two counts' parameters together, with
    the seeds' correlation, covered only 91% with 8 seeds and no effect); the
    simulated seeds' logits correlate as the data's empirical logits do (Pearson,
    clipped to +-MAX_RHO), and their hits are binomial.

    Args:
      hits_a, hits_b: (..., S) hits of the same seeds at two counts.
      n_a, n_b: broadcastable: stamped images of each replica.
      draws: D simulated sweeps.
      rng: generator.

    Returns:
      The PairReference.
    """
    xa, na = np.broadcast_arrays(np.asarray(hits_a, float), np.asarray(n_a, float))
    xb, nb = np.broadcast_arrays(np.asarray(hits_b, float), np.asarray(n_b, float))
    s = xa.shape[-1]
    mu_a, sigma_a = logit_normal_draws(xa, na, draws=draws, rng=rng)
    mu_b, sigma_b = logit_normal_draws(xb, nb, draws=draws, rng=rng)
    za, _ = empirical_logit(xa, na)
    zb, _ = empirical_logit(xb, nb)
    rho = np.clip(_pearson_last(za, zb), -MAX_RHO, MAX_RHO)[..., None, None]
    u = rng.standard_normal(mu_a.shape + (s,))  # (..., D, S): the seeds' effects
    e = rho * u + np.sqrt(1 - rho**2) * rng.standard_normal(u.shape)
    images_a, images_b = na[..., None, :], nb[..., None, :]  # (..., 1, S)
    p_a = special.expit(mu_a[..., None] + sigma_a[..., None] * u)
    p_b = special.expit(mu_b[..., None] + sigma_b[..., None] * e)
    sim_a = rng.binomial(images_a.astype(np.int64), p_a) / images_a
    sim_b = rng.binomial(images_b.astype(np.int64), p_b) / images_b
    return PairReference(
        theta_a=logit_normal_mean(mu_a, sigma_a),
        theta_b=logit_normal_mean(mu_b, sigma_b),
        simulated=_moments(sim_a, sim_b),
        observed=_moments(xa / na, xb / nb),
        n_seeds=s,
    )


def _combination(moments, wa, wb, n_seeds):
    """Value and standard error of wa mean_a + wb mean_b from paired moments."""
    mean_a, mean_b, var_a, var_b, cov = (m[..., None] for m in moments)
    value = wa * mean_a + wb * mean_b
    var = wa**2 * var_a + wb**2 * var_b + 2 * wa * wb * cov
    return value, np.sqrt(np.maximum(var, 0.0) / n_seeds)


def _studentized(value, truth, se):
    """(value - truth) / se; +-inf where se is 0 off target, 0 on target."""
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (value - truth) / np.where(se > 0, se, 1.0)
    flat = np.where(value > truth, np.inf, np.where(value < truth, -np.inf, 0.0))
    return np.where(se > 0, t, flat)


def reference_pivots(ref: PairReference, wa, wb) -> np.ndarray:
    """(..., D, G) reference draws of the studentized combination.

    Args:
      ref: the pair's reference.
      wa, wb: (G,) weights of counts a and b (e.g. -1, +1 for the delta).
    """
    value, se = _combination(ref.simulated, wa, wb, ref.n_seeds)
    truth = wa * ref.theta_a[..., None] + wb * ref.theta_b[..., None]
    return _studentized(value, truth, se)


def _order_bounds(pivots: np.ndarray, level: float) -> tuple[np.ndarray, ...]:
    """Lower and upper reference quantiles over axis -2 as order statistics.

    With k = floor((1 - level) (D + 1) / 2) - 1, q_low is the (k + 1)-th
    smallest draw and q_high the (k + 1)-th largest, so a statistic lies
    outside [q_low, q_high] exactly when `_two_sided_p` is at most 1 - level.
    """
    d = pivots.shape[-2]
    k = int(math.floor((1 - level) * (d + 1) / 2 + 1e-9)) - 1
    k = min(max(k, 0), d - 1)
    ordered = np.sort(pivots, axis=-2)
    return ordered[..., k, :], ordered[..., d - 1 - k, :]


def _two_sided_p(pivots: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Monte Carlo two-sided p of t against the draws (..., D, G).

    2 min(1 + draws <= t, 1 + draws >= t) / (1 + D), at most 1: never 0, as
    with any Monte Carlo p-value (its floor is 2 / (1 + D)).
    """
    d = pivots.shape[-2]
    below = (pivots <= t[..., None, :]).sum(axis=-2)
    above = (pivots >= t[..., None, :]).sum(axis=-2)
    return np.minimum(1.0, 2 * (1 + np.minimum(below, above)) / (1 + d))


def asr_delta_interval(
    hits_clean: np.ndarray,
    hits_poisoned: np.ndarray,
    n_clean: np.ndarray,
    n_poisoned: np.ndarray,
    *,
    level: float = 0.95,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Paired delta of mean ASR (poisoned minus clean twin), vectorised.

    The paired t statistic of the seeds' deltas (natural scale), referred to
    its distribution under the twins' fitted model (`pair_reference`); the
    p-value is that interval inverted at 0.

    Args:
      hits_clean, hits_poisoned: (..., S) hits of the twins of S seeds.
      n_clean, n_poisoned: broadcastable: stamped images of each replica.
      level: confidence level.
      draws: simulated sweeps per interval.
      rng: generator; None: fixed seed 0.

    Returns:
      (delta, low, high, p), each (...), fractions (delta in [-1, 1]); NaN
      interval and p where every seed's delta is the same (no spread).
    """
    rng = _rng(rng)
    ref = pair_reference(
        hits_clean, hits_poisoned, n_clean, n_poisoned, draws=draws, rng=rng
    )
    wa, wb = np.array([-1.0]), np.array([1.0])
    pivots = reference_pivots(ref, wa, wb)
    value, se = _combination(ref.observed, wa, wb, ref.n_seeds)
    q_low, q_high = _order_bounds(pivots, level)
    with np.errstate(invalid="ignore"):
        low = np.clip(value - q_high * se, -1.0, 1.0)
        high = np.clip(value - q_low * se, -1.0, 1.0)
    p = _two_sided_p(pivots, _studentized(value, 0.0, se))
    flat = se == 0
    low, high, p = (np.where(flat, np.nan, a)[..., 0] for a in (low, high, p))
    return value[..., 0], low, high, p

