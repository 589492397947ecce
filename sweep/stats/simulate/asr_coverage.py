"""Coverage of the ASR intervals, test and threshold set, simulated.

Vectorised NumPy over trials, through the same functions the ASR rows use
(`mean_asr_interval`, `asr_delta_interval`, `segment_kept`). Noise model of a
backdoor sweep, seed s at count j (count 0: the clean twin):

    logit ASR[s, j] = mu_j + sigma (sqrt(r) u[s] + sqrt(1 - r) e[s, j])
    hits[s, j] ~ Binomial(n_test, ASR[s, j])

u (the seed's effect, shared by its twins: initial weights, data order,
dropout) and e are independent, standard normal or Student t(5) scaled to unit
variance; r is the twin correlation of the logits. mu_j is set so that the MEAN
ASR over seeds, E ASR[s, j], is the scenario's value: the estimand. Between-seed
sd sigma on the logit scale from 0.2 (seeds agree) to 1.0 (a seed's odds of
success vary by a factor of e^2 either way, as near the count where the
backdoor starts to take).

    python -m sweep.stats.simulate.asr_coverage [--trials 4000] [--seeds 3,4,8,16]
        [--power]

prints Markdown tables (docs/statistics.md, "Attack success rate", lists the
cells the tests check): coverage, or with --power the delta test's rejection
rates beside the paired t test's.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from dataclasses import KW_ONLY, dataclass

import numpy as np
import pandas as pd
from scipy import integrate, optimize, special, stats

from sweep.stats.attack_success import (
    AT_BOUND,
    FEW,
    asr_delta_interval,
    empirical_logit,
    fixed_sequence_adjusted,
    mean_asr_interval,
    segment_kept,
)
from sweep.stats.threshold import first_crossing

SEEDS = (3, 4, 8, 16)
DEFAULT_TRIALS = 4000
SIM_DRAWS = 1000  # Monte Carlo draws per interval here (the tool uses 10,000)
BLOCK = 250  # trials at once: bounds memory to a few hundred MB at 16 seeds


@dataclass(frozen=True)
class AsrScenario:
    """A backdoor sweep's truth: mean ASR per count (fractions), count 0 clean."""

    label: str
    means: tuple[float, ...]
    _: KW_ONLY
    counts: tuple[int, ...] = (0, 1)
    sigma: float = 0.5  # between-seed sd of the logit, every count
    twin_corr: float = 0.5  # correlation of a seed's logits across counts
    n_test: int = 1800  # stamped test images per replica
    dist: str = "normal"  # or "t5": heavy-tailed seeds on the logit scale


def _unit(rng: np.random.Generator, shape: tuple[int, ...], dist: str) -> np.ndarray:
    if dist == "normal":
        return rng.standard_normal(shape)
    if dist == "t5":
        return rng.standard_t(5, shape) * math.sqrt(3 / 5)
    raise ValueError(f"unknown distribution {dist!r}")


def latent_mean(mu: float, sigma: float, dist: str) -> float:
    """E[expit(mu + sigma W)], W unit-variance normal or scaled t(5)."""
    if dist == "normal":
        density = stats.norm.pdf
    else:
        scale = math.sqrt(3 / 5)

        def density(w):
            return stats.t.pdf(w / scale, 5) / scale

    value, _ = integrate.quad(
        lambda w: special.expit(mu + sigma * w) * density(w), -np.inf, np.inf
    )
    return value


@functools.lru_cache(maxsize=256)
def latent_location(mean: float, sigma: float, dist: str) -> float:
    """mu such that the mean ASR over seeds is `mean`."""
    return optimize.brentq(
        lambda m: latent_mean(m, sigma, dist) - mean, -40, 40, xtol=1e-12
    )


def draw_hits(
    scenario: AsrScenario, *, trials: int, seeds: int, rng: np.random.Generator
) -> np.ndarray:
    """(trials, seeds, C) hits out of scenario.n_test."""
    s = scenario
    mu = np.array([latent_location(m, s.sigma, s.dist) for m in s.means])
    u = _unit(rng, (trials, seeds, 1), s.dist)
    e = _unit(rng, (trials, seeds, mu.size), s.dist)
    r = s.twin_corr
    logit = mu + s.sigma * (math.sqrt(r) * u + math.sqrt(1 - r) * e)
    return rng.binomial(s.n_test, special.expit(logit))


def _blocks(trials: int):
    for start in range(0, trials, BLOCK):
        yield start, min(BLOCK, trials - start)


def coverage_mean(
    scenario: AsrScenario, *, seeds: int, trials: int, level: float, rng, j: int = -1
) -> dict[str, float]:
    """Mean ASR at count j: the reported interval and two that are not used.

    Returns:
      reported (its coverage, every regime together), one_sided and few (the
      share of trials in those regimes), t (plain t on the seeds' ASRs) and
      logit_t (t on their empirical logits, back-transformed: an interval for
      the median seed's ASR).
    """
    truth = scenario.means[j]
    n = scenario.n_test
    hits, regime, plain, logit_t = [], [], [], []
    for _, size in _blocks(trials):
        x = draw_hits(scenario, trials=size, seeds=seeds, rng=rng)[..., j]
        _, low, high, kind = mean_asr_interval(
            x, n, level=level, draws=SIM_DRAWS, rng=rng
        )
        hits.append((low <= truth) & (truth <= high))
        regime.append(kind)
        q = stats.t.ppf(0.5 + level / 2, seeds - 1) / math.sqrt(seeds)
        rate = x / n
        half = q * rate.std(axis=-1, ddof=1)
        plain.append(np.abs(rate.mean(axis=-1) - truth) <= half)
        z, _ = empirical_logit(x, n)
        half = q * z.std(axis=-1, ddof=1)
        centre = z.mean(axis=-1)
        low, high = special.expit(centre - half), special.expit(centre + half)
        logit_t.append((low <= truth) & (truth <= high))
    regime = np.concatenate(regime)
    return {
        "reported": float(np.concatenate(hits).mean()),
        "one_sided": float(np.mean(regime == AT_BOUND)),
        "few": float(np.mean(regime == FEW)),
        "t": float(np.concatenate(plain).mean()),
        "logit_t": float(np.concatenate(logit_t).mean()),
    }


def coverage_delta(
    scenario: AsrScenario, *, seeds: int, trials: int, level: float, rng, j: int = -1
) -> dict[str, float]:
    """Paired delta (count j minus clean): reported interval and the paired t.

    Returns:
      reported (coverage of the stated intervals), unstated (share of trials
      without one: every seed's delta the same) and t (plain paired t).
    """
    truth = scenario.means[j] - scenario.means[0]
    n = scenario.n_test
    hits, stated, plain = [], [], []
    for _, size in _blocks(trials):
        x = draw_hits(scenario, trials=size, seeds=seeds, rng=rng)
        _, low, high, _ = asr_delta_interval(
            x[..., 0], x[..., j], n, n, level=level, draws=SIM_DRAWS, rng=rng
        )
        ok = np.isfinite(low)
        hits.append((low <= truth) & (truth <= high) & ok)
        stated.append(ok)
        d = (x[..., j] - x[..., 0]) / n
        half = (
            stats.t.ppf(0.5 + level / 2, seeds - 1)
            * d.std(axis=-1, ddof=1)
            / math.sqrt(seeds)
        )
        plain.append(np.abs(d.mean(axis=-1) - truth) <= half)
    stated = np.concatenate(stated)
    return {
        "reported": float(np.concatenate(hits).sum() / max(stated.sum(), 1)),
        "unstated": float(1 - stated.mean()),
        "t": float(np.concatenate(plain).mean()),
    }


def true_crossing(scenario: AsrScenario, threshold: float) -> float:
    """Count where the true mean ASR, linear between counts, first reaches X."""
    counts = np.asarray(scenario.counts, dtype=float)
    means = np.asarray(scenario.means, dtype=float)
    return float(first_crossing(counts, -means[None], -threshold)[0])


def coverage_threshold(
    scenario: AsrScenario,
    threshold: float,
    *,
    seeds: int,
    trials: int,
    level: float,
    rng,
) -> float:
    """How often `asr_threshold_set` holds the true crossing of X (fraction):
    the test of "mean ASR = X" there does not reject."""
    c = true_crossing(scenario, threshold)
    counts = np.asarray(scenario.counts, dtype=float)
    j = int(np.searchsorted(counts, c, side="right")) - 1
    w = np.array([(c - counts[j]) / (counts[j + 1] - counts[j])])
    n = scenario.n_test
    kept = []
    for _, size in _blocks(trials):
        x = draw_hits(scenario, trials=size, seeds=seeds, rng=rng)
        ok, _ = segment_kept(
            x[..., j],
            x[..., j + 1],
            n,
            n,
            w,
            threshold,
            level=level,
            draws=SIM_DRAWS,
            rng=rng,
        )
        kept.append(ok[..., 0])
    return float(np.concatenate(kept).mean())


def fwer(scenario: AsrScenario, *, seeds: int, trials: int, alpha: float, rng) -> float:
    """Familywise error of the fixed-sequence "ASR rose" decisions when no
    count changes the ASR (every mean equal to the clean one)."""
    n = scenario.n_test
    errors = []
    for _, size in _blocks(trials):
        x = draw_hits(scenario, trials=size, seeds=seeds, rng=rng)
        p, rose = [], []
        for j in range(1, x.shape[-1]):
            delta, _, _, p_j = asr_delta_interval(
                x[..., 0], x[..., j], n, n, draws=SIM_DRAWS, rng=rng
            )
            p.append(p_j)
            rose.append(delta > 0)
        p, rose = np.stack(p, axis=-1), np.stack(rose, axis=-1)
        adjusted = np.apply_along_axis(fixed_sequence_adjusted, -1, p)
        errors.append(((adjusted <= alpha) & rose).any(axis=-1))
    return float(np.concatenate(errors).mean())


def rejections(
    scenario: AsrScenario, *, seeds: int, trials: int, alpha: float, rng
) -> tuple[float, float]:
    """Two-sided rejection rates of "delta = 0" at count 1: (the reported test,
    the plain paired t test)."""
    n = scenario.n_test
    reported, plain = [], []
    for _, size in _blocks(trials):
        x = draw_hits(scenario, trials=size, seeds=seeds, rng=rng)
        _, _, _, p = asr_delta_interval(
            x[..., 0], x[..., 1], n, n, draws=SIM_DRAWS, rng=rng
        )
        reported.append(p <= alpha)
        d = (x[..., 1] - x[..., 0]) / n
        sd = d.std(axis=-1, ddof=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            t = np.abs(d.mean(axis=-1)) / (sd / math.sqrt(seeds))
        plain.append((sd > 0) & (2 * stats.t.sf(t, seeds - 1) <= alpha))
    return float(np.concatenate(reported).mean()), float(np.concatenate(plain).mean())


# The scenarios of docs/statistics.md.

MEAN_SCENARIOS = (
    AsrScenario(
        "0.1% (about 1 hit a seed), sd 0.5, n 1,000", (0.05, 0.001), n_test=1000
    ),
    AsrScenario("0.1%, sd 0.5, n 9,000", (0.05, 0.001), n_test=9000),
    AsrScenario("2% (0.1% poisoned), sd 0.5, n 1,800", (0.01, 0.02), n_test=1800),
    AsrScenario("3%, sd 1.0, n 9,000", (0.01, 0.03), sigma=1.0, n_test=9000),
    AsrScenario("50%, sd 1.0, n 1,800", (0.05, 0.5), sigma=1.0, n_test=1800),
    AsrScenario("97%, sd 1.0, n 1,000", (0.05, 0.97), sigma=1.0, n_test=1000),
    AsrScenario("99.9% (10% poisoned), sd 0.5, n 9,000", (0.05, 0.999), n_test=9000),
    AsrScenario("99.9%, sd 1.0, n 1,800", (0.05, 0.999), sigma=1.0, n_test=1800),
    AsrScenario(
        "99.95% (0.5 misses a seed), sd 0.5, n 1,000", (0.1, 0.9995), n_test=1000
    ),
    AsrScenario(
        "97%, sd 1.0, n 1,000, t5 seeds",
        (0.05, 0.97),
        sigma=1.0,
        n_test=1000,
        dist="t5",
    ),
)
# Not used by the tool, shown for why: the rows where they fail.
COMPARED = (3, 5, 7, 8)
DELTA_SCENARIOS = (
    AsrScenario("5% -> 99.9%, sd 0.5, r 0.5, n 9,000", (0.05, 0.999), n_test=9000),
    AsrScenario("10% -> 99.95%, sd 0.5, r 0.5, n 1,000", (0.1, 0.9995), n_test=1000),
    AsrScenario("5% -> 97%, sd 1.0, r 0.5, n 1,800", (0.05, 0.97), sigma=1.0),
    AsrScenario(
        "5% -> 50%, sd 1.0, r 0.9, n 1,800", (0.05, 0.5), sigma=1.0, twin_corr=0.9
    ),
    AsrScenario(
        "1% -> 3%, sd 1.0, r 0.9, n 9,000",
        (0.01, 0.03),
        sigma=1.0,
        twin_corr=0.9,
        n_test=9000,
    ),
    AsrScenario(
        "2% -> 2% (no effect), sd 0.5, r 0.9, n 1,800", (0.02, 0.02), twin_corr=0.9
    ),
    AsrScenario(
        "15% -> 99.9%, sd 1.0, r 0.5, n 1,000", (0.15, 0.999), sigma=1.0, n_test=1000
    ),
    AsrScenario(
        "5% -> 97%, sd 1.0, r 0.5, n 1,800, t5 seeds",
        (0.05, 0.97),
        sigma=1.0,
        dist="t5",
    ),
)
DELTA_COMPARED = (2, 4, 6)
CURVE = AsrScenario(
    "counts 0, 20, 80, 400: ASR 3%, 25%, 85%, 99.9%; sd 0.7, r 0.5, n 1,800",
    (0.03, 0.25, 0.85, 0.999),
    counts=(0, 20, 80, 400),
    sigma=0.7,
)
NULL_CURVE = AsrScenario(
    "counts 0, 20, 80, 400, all at 3%; sd 0.5, r 0.5, n 1,800",
    (0.03, 0.03, 0.03, 0.03),
    counts=(0, 20, 80, 400),
)


POWER_SCENARIOS = (
    AsrScenario("3% -> 3% (no effect), sd 0.5, r 0.5", (0.03, 0.03)),
    AsrScenario("3% -> 3% (no effect), sd 0.5, r 0.9", (0.03, 0.03), twin_corr=0.9),
    AsrScenario("3% -> 4.5%, sd 0.5, r 0.5", (0.03, 0.045)),
    AsrScenario("3% -> 4.5%, sd 0.5, r 0.9", (0.03, 0.045), twin_corr=0.9),
    AsrScenario("3% -> 6%, sd 0.5, r 0.5", (0.03, 0.06)),
    AsrScenario("5% -> 20%, sd 1.0, r 0.5", (0.05, 0.2), sigma=1.0),
)


def power_table(
    *,
    seeds: tuple[int, ...] = SEEDS,
    trials: int = DEFAULT_TRIALS,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Rejection rates of the reported delta test and the paired t, n 1,800."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in seeds:
        for scenario in POWER_SCENARIOS:
            ours, plain = rejections(
                scenario, seeds=n, trials=trials, alpha=alpha, rng=rng
            )
            rows.append(
                {
                    "quantity": f"rejections at {alpha:g}: {scenario.label}",
                    "seeds": n,
                    "simulated": ours,
                    "regimes": f"paired t {plain:.3f}",
                }
            )
    return pd.DataFrame(rows)


def table(
    *,
    seeds: tuple[int, ...] = SEEDS,
    trials: int = DEFAULT_TRIALS,
    level: float = 0.95,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Every ASR quantity's simulated value, one row per quantity x seeds."""
    rng = np.random.default_rng(seed)
    rows = []

    def add(what: str, n: int, value: float) -> None:
        rows.append({"quantity": what, "seeds": n, "simulated": value})

    for n in seeds:
        kw = dict(seeds=n, trials=trials, level=level, rng=rng)
        for i, scenario in enumerate(MEAN_SCENARIOS):
            result = coverage_mean(scenario, **kw)
            extra = []
            if result["one_sided"] > 0:
                extra.append(f"{result['one_sided']:.0%} one-sided")
            if result["few"] > 0:
                extra.append(f"{result['few']:.0%} Wilson")
            add(
                f"mean ASR: {scenario.label}",
                n,
                result["reported"],
            )
            rows[-1]["regimes"] = ", ".join(extra)
            if i in COMPARED:
                add(f"not used: plain t, {scenario.label}", n, result["t"])
                add(f"not used: t on logits, {scenario.label}", n, result["logit_t"])
        for i, scenario in enumerate(DELTA_SCENARIOS):
            result = coverage_delta(scenario, **kw)
            add(f"delta: {scenario.label}", n, result["reported"])
            if result["unstated"] > 0:
                rows[-1]["regimes"] = f"{result['unstated']:.1%} not stated"
            if i in DELTA_COMPARED:
                add(f"not used: paired t, delta {scenario.label}", n, result["t"])
        for x in (0.5, 0.9):
            add(
                f"threshold set, ASR {x:.0%} ({CURVE.label})",
                n,
                coverage_threshold(CURVE, x, **kw),
            )
        add(
            f"FWER at alpha {alpha:g}: fixed sequence ({NULL_CURVE.label})",
            n,
            fwer(NULL_CURVE, seeds=n, trials=trials, alpha=alpha, rng=rng),
        )
    return pd.DataFrame(rows)


def to_markdown(frame: pd.DataFrame) -> str:
    """Quantities as rows, seeds as columns; a cell with a regime note shows it."""
    seeds = sorted(frame["seeds"].unique())
    lines = [
        "| quantity | " + " | ".join(f"{n} seeds" for n in seeds) + " |",
        "|" + "---|" * (len(seeds) + 1),
    ]
    if "regimes" not in frame.columns:
        frame = frame.assign(regimes="")
    for what, rows in frame.groupby("quantity", sort=False):
        cells = []
        for n in seeds:
            row = rows[rows["seeds"] == n].iloc[0]
            cell = f"{row['simulated']:.3f}"
            note = row["regimes"]
            if isinstance(note, str) and note:
                cell += f" ({note})"
            cells.append(cell)
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sweep.stats.simulate.asr_coverage",
        description="Simulated coverage of the ASR intervals, test and thresholds.",
    )
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS)
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--seed", type=int, default=0, help="simulation seed")
    parser.add_argument(
        "--power",
        action="store_true",
        help="the delta test's rejection rates (and the paired t's) instead",
    )
    args = parser.parse_args(argv)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    if args.power:
        print(
            f"ASR delta test, {args.trials} trials a cell, {SIM_DRAWS} draws; "
            "cell: reported test (paired t test)"
        )
        frame = power_table(seeds=seeds, trials=args.trials, seed=args.seed)
        print(to_markdown(frame))
        return 0
    print(
        f"ASR coverage, {args.trials} trials a cell, {SIM_DRAWS} Monte Carlo draws "
        "an interval; 95% intervals, FWER at alpha 0.05"
    )
    print(to_markdown(table(seeds=seeds, trials=args.trials, seed=args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
