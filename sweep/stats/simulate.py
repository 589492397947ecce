"""Coverage and power of every interval and decision the tool reports, simulated.

Vectorised NumPy: every trial of a scenario is drawn at once, and the statistics
are computed by the same functions the summary uses (or, where the summary's
function works one sweep at a time, by a vectorised twin that the tests check
against it). The noise model is a seed x count table of one class's accuracy:

    a[s, j] = mu[j] + u[s] + e[s, j]

u (the seed's effect, shared by the twins of seed s) and e (everything else) are
independent, normal or Student t with 5 degrees of freedom scaled to the same
variance, with var(u) / (var(u) + var(e)) = the twin correlation r, so a delta
a[s, j] - a[s, 0] has sd sqrt(2 (1 - r)) sd(a). `NoiseModel.from_metrics` takes
r and the per-class delta sd from a real sweep; `python -m sweep.stats.simulate
--from RESULTS_DIR` writes the table of docs/statistics.md.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from sweep.stats.dose import (
    first_crossing,
    threshold_interval_from_moments,
    threshold_interval_unpaired,
)
from sweep.stats.multiplicity import holm
from sweep.stats.power import (
    POWER_ALPHA,
    POWER_TARGET,
    min_detectable_effect,
    paired_power,
    row_alpha,
)

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
        from sweep.stats.dose import dose_response
        from sweep.stats.summary import summarize

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


# Intervals.


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


# Decisions.


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


# The table.


def table(
    model: NoiseModel,
    *,
    seeds: tuple[int, ...] = SEEDS,
    trials: int = DEFAULT_TRIALS,
    level: float = 0.95,
    alpha: float = POWER_ALPHA,
    m_exploratory: int = 8 * 3,
    seed: int = 0,
) -> pd.DataFrame:
    """Every reported interval's coverage and every procedure's power, by seeds."""
    rng = np.random.default_rng(seed)
    rows = []

    def add(what: str, n: int, dist: str, value: float, promised: float | str) -> None:
        rows.append(
            {
                "quantity": what,
                "seeds": n,
                "noise": dist,
                "simulated": value,
                "stated": promised,
            }
        )

    scenarios = threshold_scenarios(model)
    for n in seeds:
        for dist in DISTRIBUTIONS:
            kw = dict(seeds=n, dist=dist, trials=trials, rng=rng)
            add(
                "coverage: paired t interval (ci)",
                n,
                dist,
                coverage_paired_t(model, level=level, **kw),
                level,
            )
            add(
                "coverage: Welch interval (ci, --unpaired)",
                n,
                dist,
                coverage_welch(model, level=level, **kw),
                level,
            )
            add(
                "not reported: percentile bootstrap (2,000 trials)",
                n,
                dist,
                coverage_percentile_bootstrap(model, level=level, **kw),
                level,
            )
            delta, absolute = coverage_band(model, level=level, **kw)
            add(
                "coverage: dose-response band, deltas (pointwise, worst count)",
                n,
                dist,
                delta,
                level,
            )
            add(
                "coverage: accuracy band (pointwise, worst count)",
                n,
                dist,
                absolute,
                level,
            )
            for name, x in scenarios.items():
                # "Never reached" is a one-sided claim (the set reaches beyond
                # the largest count): at least `level`, not about it.
                promised = f">= {level:g}" if name == "never reached" else level
                add(
                    f"coverage: threshold set (reported), {name}",
                    n,
                    dist,
                    coverage_threshold_set(model, x, level=level, **kw),
                    promised,
                )
            for name, x in scenarios.items():
                if name != "never reached":
                    add(
                        f"coverage: threshold set, --unpaired, {name}",
                        n,
                        dist,
                        coverage_threshold_set(
                            model, x, level=level, paired=False, **kw
                        ),
                        level,
                    )
            for name, x in scenarios.items():
                if name != "never reached":
                    add(
                        f"conservative: threshold hull (threshold_count), {name}",
                        n,
                        dist,
                        coverage_threshold(model, x, level=level, **kw),
                        f">= {level:g}",
                    )
                    add(
                        "conservative: threshold hull (threshold_count), "
                        f"--unpaired, {name}",
                        n,
                        dist,
                        coverage_threshold_unpaired(model, x, level=level, **kw),
                        f">= {level:g}",
                    )
            g, p = fwer_confirmatory(model, alpha=alpha, **kw)
            add("FWER: confirmatory rule, global null", n, dist, g, f"<= {alpha:g}")
            add(
                "FWER: confirmatory rule, null counts below an effective one",
                n,
                dist,
                p,
                f"<= {alpha:g}",
            )
            mde = min_detectable_effect(
                model.delta_sd,
                n,
                alpha=row_alpha("confirmatory", alpha=alpha),
                power=POWER_TARGET,
            )
            add(
                "power: confirmatory rule at plan's mde (stated: 0.8)",
                n,
                dist,
                power_confirmatory(model, mde, alpha=alpha, **kw),
                POWER_TARGET,
            )
            effect = 2 * model.delta_sd
            stated = paired_power(
                effect, model.delta_sd, n, alpha=row_alpha("confirmatory", alpha=alpha)
            )
            add(
                f"power: confirmatory rule, effect 2 sd = {effect:.2f} points "
                "(simulated / plan)",
                n,
                dist,
                power_confirmatory(model, effect, alpha=alpha, **kw),
                stated,
            )
            level_e = row_alpha("exploratory", alpha=alpha, m_exploratory=m_exploratory)
            mde_e = min_detectable_effect(
                model.delta_sd, n, alpha=level_e, power=POWER_TARGET
            )
            power_e, fwer_e = power_exploratory(
                model, mde_e, m_exploratory, alpha=alpha, **kw
            )
            add(
                f"power: exploratory Holm (m={m_exploratory}) at its mde (stated: 0.8)",
                n,
                dist,
                power_e,
                POWER_TARGET,
            )
            add(
                f"FWER: exploratory Holm (m={m_exploratory})",
                n,
                dist,
                fwer_e,
                f"<= {alpha:g}",
            )
    return pd.DataFrame(rows)


def to_markdown(frame: pd.DataFrame) -> str:
    """Quantities as rows, (seeds, noise) as columns; a cell whose stated value
    depends on the seeds shows "simulated / stated"."""
    columns = list(dict.fromkeys(zip(frame["seeds"], frame["noise"], strict=True)))
    header = "| quantity | " + " | ".join(f"{n} seeds, {d}" for n, d in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for what, rows in frame.groupby("quantity", sort=False):
        cells = []
        for n, d in columns:
            row = rows[(rows["seeds"] == n) & (rows["noise"] == d)].iloc[0]
            value = f"{row['simulated']:.3f}"
            if "simulated / plan" in what:
                value += f" / {row['stated']:.3f}"
            cells.append(value)
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sweep.stats.simulate",
        description="Simulated coverage and power of everything the summary reports.",
    )
    parser.add_argument(
        "--from",
        dest="results_dir",
        default=None,
        help="take the noise model from this finished sweep",
    )
    parser.add_argument("--source", default="cat", help="class of the threshold curve")
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS)
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    args = parser.parse_args(argv)
    if args.results_dir:
        from sweep.results import load_results

        results = load_results(args.results_dir)
        model = NoiseModel.from_metrics(
            results.metrics, source_class=args.source, label=args.results_dir
        )
    else:
        model = NoiseModel()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    print(
        f"noise model ({model.source}): delta sd {model.delta_sd:.2f} points, twin "
        f"correlation {model.twin_corr:.2f}, {args.source} accuracy "
        + ", ".join(
            f"{v:.1f}% at {c}" for c, v in zip(model.counts, model.curve, strict=True)
        )
        + f"; {args.trials} trials a cell"
    )
    print(to_markdown(table(model, seeds=seeds, trials=args.trials)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
