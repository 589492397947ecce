"""The coverage and power table of docs/statistics.md, and its command line.

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

import numpy as np
import pandas as pd

from sweep.results.load import load_results
from sweep.stats.power import (
    POWER_ALPHA,
    POWER_TARGET,
    min_detectable_effect,
    paired_power,
    row_alpha,
)
from sweep.stats.simulate.decisions import (
    fwer_confirmatory,
    power_confirmatory,
    power_exploratory,
)
from sweep.stats.simulate.interval_coverage import (
    coverage_band,
    coverage_paired_t,
    coverage_percentile_bootstrap,
    coverage_threshold,
    coverage_threshold_set,
    coverage_threshold_unpaired,
    coverage_welch,
    threshold_scenarios,
)
from sweep.stats.simulate.noise import (
    DEFAULT_TRIALS,
    DISTRIBUTIONS,
    SEEDS,
    NoiseModel,
)


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

