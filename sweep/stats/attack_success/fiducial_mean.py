"""Mean attack success rate over seeds at one count, and its interval.

Per seed the logit of the ASR is normal around mu with a between-seed sd
sigma, and the hits are binomial given it (the logit-normal binomial
random-effects model; Breslow and Clayton 1993); the mean ASR is
E[expit(mu + sigma Z)]. Its interval is the generalized (fiducial) confidence
interval for that mean (Weerahandi 1993; Krishnamoorthy and Mathew 2003 for
the lognormal mean), from the seeds' empirical logits with their binomial
variance taken out of the between-seed variance (Gart and Zweifel 1967). Where
the rarer outcome averages fewer than FEW_EVENTS a seed the interval also holds
Wilson's with the seeds' design effect (conservative); with every seed at 100%
(or 0%) it is the one-sided bound it is. See the package doc.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

from sweep.errors import SweepError
from sweep.stats.intervals import _rng

DEFAULT_DRAWS = 10_000  # fiducial / bootstrap-t draws of one interval
FEW_EVENTS = 5.0  # rarer outcome per seed below which Wilson is added

# Regimes of the mean ASR interval (the `asr_method` column says them in words).
FIDUCIAL, FEW, AT_BOUND = 0, 1, 2
MEAN_METHODS = {
    FIDUCIAL: "logit-normal fiducial",
    FEW: "logit-normal fiducial and Wilson (few events)",
    AT_BOUND: "one-sided: every seed at the bound",
}

_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(24)
_GH_W = _GH_W / _GH_W.sum()  # E[f(Z)], Z standard normal


def logit_normal_mean(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """E[expit(mu + sigma Z)], Z standard normal, by Gauss-Hermite (24 nodes).

    Args:
      mu, sigma: broadcastable arrays (logit scale; sigma >= 0).

    Returns:
      The mean ASR (fraction), their broadcast shape.
    """
    mu, sigma = np.asarray(mu, dtype=float), np.asarray(sigma, dtype=float)
    nodes = mu[..., None] + sigma[..., None] * _GH_X
    return special.expit(nodes) @ _GH_W


def empirical_logit(hits: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gart-Zweifel empirical logit and its binomial variance, elementwise.

    Returns:
      (log((x + 0.5) / (n - x + 0.5)), 1 / (x + 0.5) + 1 / (n - x + 0.5)).
    """
    x, n = np.asarray(hits, dtype=float), np.asarray(n, dtype=float)
    return np.log((x + 0.5) / (n - x + 0.5)), 1 / (x + 0.5) + 1 / (n - x + 0.5)


def logit_normal_draws(
    hits: np.ndarray, n: np.ndarray, *, draws: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Fiducial draws of (mu, sigma) from the seeds of one count.

    The seeds' empirical logits z are taken as normal with mean mu and variance
    sigma^2 + v (v: their mean binomial variance). The generalized pivotal
    quantities of a normal sample (Weerahandi 1993) give tau^2 = (S - 1) s^2 / U,
    U ~ chi2(S - 1), and mu = mean(z) - Z sqrt(max(tau^2, v) / S): the variance of
    the mean never falls below the binomial part. sigma^2 = max(tau^2 - v, 0).

    Args:
      hits: (..., S) hits per seed; n: broadcastable stamped images per seed.
      draws: D.
      rng: generator.

    Returns:
      (mu, sigma), each (..., D).
    """
    z, v = empirical_logit(hits, n)
    s = z.shape[-1]
    shape = z.shape[:-1] + (draws,)
    tau2 = (s - 1) * z.var(axis=-1, ddof=1)[..., None] / rng.chisquare(s - 1, shape)
    v_bar = v.mean(axis=-1)[..., None]
    z_draw = rng.standard_normal(shape)
    mu = z.mean(axis=-1)[..., None] - z_draw * np.sqrt(np.maximum(tau2, v_bar) / s)
    return mu, np.sqrt(np.maximum(tau2 - v_bar, 0.0))


def wilson_design_effect(
    hits: np.ndarray, n: np.ndarray, *, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson's interval for the mean ASR with the seeds' design effect.

    The effective number of images is S n / deff, deff = the seeds' variance of
    the mean over its binomial value (at least 1), and the quantile is t(S - 1):
    the survey estimator of a proportion from S clusters (Korn and Graubard
    1998; Dean and Pagano 2015). Conservative where events are few.

    Args:
      hits: (..., S); n: broadcastable (one value per seed).
      level: confidence level.

    Returns:
      (low, high), fractions, each (...).
    """
    x, n = np.broadcast_arrays(np.asarray(hits, float), np.asarray(n, float))
    s = x.shape[-1]
    rate = x / n
    mean = rate.mean(axis=-1)
    total = n.sum(axis=-1)
    binomial = mean * (1 - mean) / total  # var of the mean if every image were iid
    observed = rate.var(axis=-1, ddof=1) / s
    with np.errstate(invalid="ignore", divide="ignore"):
        deff = np.where(binomial > 0, observed / binomial, 1.0)
    n_eff = total / np.maximum(deff, 1.0)
    q2 = stats.t.ppf(0.5 + level / 2, s - 1) ** 2
    centre = (mean + q2 / (2 * n_eff)) / (1 + q2 / n_eff)
    half = (
        np.sqrt(q2)
        / (1 + q2 / n_eff)
        * np.sqrt(mean * (1 - mean) / n_eff + q2 / (4 * n_eff**2))
    )
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def mean_asr_interval(
    hits: np.ndarray,
    n: np.ndarray,
    *,
    level: float = 0.95,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean ASR over seeds and its interval, vectorised over leading axes.

    Args:
      hits: (..., S) hits of each seed's replica (S >= 2).
      n: broadcastable to hits: stamped images of each replica.
      level: confidence level.
      draws: fiducial draws per interval.
      rng: generator; None: fixed seed 0.

    Returns:
      (mean, low, high, regime), each (...): fractions; regime FIDUCIAL, FEW
      (fewer than FEW_EVENTS of the rarer outcome per seed: the fiducial and
      Wilson intervals' union) or AT_BOUND (every seed at 100%: [low, 1]; at
      0%: [0, high]); MEAN_METHODS names them.
    """
    rng = _rng(rng)
    x, n = np.broadcast_arrays(np.asarray(hits, float), np.asarray(n, float))
    if x.shape[-1] < 2:
        raise SweepError("an ASR interval needs at least 2 seeds")
    mean = (x / n).mean(axis=-1)
    rarer = np.minimum(x, n - x).mean(axis=-1)
    at_bound = (x == n).all(axis=-1) | (x == 0).all(axis=-1)
    regime = np.where(at_bound, AT_BOUND, np.where(rarer < FEW_EVENTS, FEW, FIDUCIAL))
    mu, sigma = logit_normal_draws(x, n, draws=draws, rng=rng)
    theta = logit_normal_mean(mu, sigma)  # (..., D)
    a = (1 - level) / 2
    low, high = np.quantile(theta, a, axis=-1), np.quantile(theta, 1 - a, axis=-1)
    # Few events: the fiducial interval's binomial part is Wald's (variance at
    # the observed rate), too short when the counts come out high by chance;
    # Wilson's evaluates it at the candidate rate. Take both.
    w_low, w_high = wilson_design_effect(x, n, level=level)
    few = regime != FIDUCIAL
    low = np.where(few, np.minimum(low, w_low), low)
    high = np.where(few, np.maximum(high, w_high), high)
    high = np.where((x == n).all(axis=-1), 1.0, high)
    low = np.where((x == 0).all(axis=-1), 0.0, low)
    return mean, low, high, regime

