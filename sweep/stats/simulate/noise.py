"""The simulations' noise model: one class's accuracy per seed x count.

    a[s, j] = mu[j] + u[s] + e[s, j]

u (the seed's effect, shared by the twins of seed s) and e (everything else) are
independent, normal or Student t with 5 degrees of freedom scaled to the same
variance, with var(u) / (var(u) + var(e)) = the twin correlation r, so a delta
a[s, j] - a[s, 0] has sd sqrt(2 (1 - r)) sd(a). `NoiseModel.from_metrics` takes
r and the per-class delta sd from a real sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sweep.stats.dose_curve import dose_response
from sweep.stats.summary import summarize

SEEDS = (3, 4, 8, 16)
DISTRIBUTIONS = ("normal", "t5")
DEFAULT_TRIALS = 4000


@dataclass(frozen=True)
class NoiseModel:
    """Seed noise of one class's accuracy (points) across a sweep's counts.

    delta_sd: sd of a poisoned-minus-clean delta; twin_corr: correlation of the
    twins' accuracies; curve: mean source accuracy at `counts` (the threshold
    scenario); source: where the numbers come from.
    """

    delta_sd: float = 2.0
    twin_corr: float = 0.5
    counts: tuple[int, ...] = (0, 50, 150, 400)
    curve: tuple[float, ...] = (45.0, 40.0, 30.0, 10.0)
    source: str = "textbook default (no sweep given)"

    @property
    def sd(self) -> float:
        """sd of one replica's accuracy."""
        return self.delta_sd / math.sqrt(2 * (1 - self.twin_corr))

    @classmethod
    def from_metrics(
        cls, metrics: pd.DataFrame, *, source_class: int | str = "cat", label: str = ""
    ) -> NoiseModel:
        """Twin correlation and delta sd (medians over count x class rows at the
        last epoch) and the source class's mean accuracy curve, from a sweep."""
        summary = summarize(metrics, n_resamples=99)
        corr = float(np.nanmedian(summary["twin_corr"]))
        sd = float(np.nanmedian(summary["delta_sd"]))
        ids = summary.drop_duplicates("class_id").set_index("class_name")["class_id"]
        k = int(ids[source_class]) if isinstance(source_class, str) else source_class
        curve = dose_response(metrics, class_id=k, absolute=True)
        return cls(
            delta_sd=sd,
            twin_corr=corr,
            counts=tuple(int(c) for c in curve["count"]),
            curve=tuple(float(v) for v in curve["accuracy_mean"]),
            source=label or "a sweep's metrics",
        )


def draw(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    dist: str,
) -> np.ndarray:
    """Unit-variance noise: standard normal, or t(5) scaled by sqrt(3/5)."""
    if dist == "normal":
        return rng.standard_normal(shape)
    if dist == "t5":
        return rng.standard_t(5, shape) * math.sqrt(3 / 5)
    raise ValueError(f"unknown distribution {dist!r}")


def accuracies(
    model: NoiseModel,
    mu: np.ndarray,
    *,
    trials: int,
    seeds: int,
    dist: str,
    rng: np.random.Generator,
    paired: bool = True,
) -> np.ndarray:
    """(trials, seeds, C) accuracies with true means mu (C,).

    Paired: a seed's effect is shared by all its counts (twins); unpaired:
    every replica draws its own.
    """
    mu = np.asarray(mu, dtype=float)
    r = model.twin_corr
    e = draw(rng, (trials, seeds, mu.size), dist) * model.sd * math.sqrt(1 - r)
    u_shape = (trials, seeds, 1) if paired else (trials, seeds, mu.size)
    u = draw(rng, u_shape, dist) * model.sd * math.sqrt(r)
    return mu + u + e
