"""Statistics of a sweep: deltas, intervals, p-values, dose-response and power.

Reads only the tidy results tables (never the engine), so any results folder can
be re-analysed. Accuracies are percent (0-100); deltas are percentage points,
poisoned minus clean. Interval functions return ``(point, (low, high))``; random
draws come from the ``np.random.Generator`` passed in (``None`` means a fixed
``default_rng(0)``, so a report is reproducible).

Paired sweeps (``paired`` True) compare each poisoned replica with the clean twin
of the same seed; unpaired sweeps compare group means (Welch). Replicas whose loss
went non-finite (``diverged``) are left out and counted.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, stats

from sweep.errors import SweepError

DEFAULT_N_RESAMPLES = 9999  # bootstrap resamples and Monte Carlo permutations
DEFAULT_N_BOOT_CURVES = 2000  # seed resamples for dose-response bands/thresholds
MAX_EXACT_SEEDS = 16  # sign-flip test enumerates all 2^n patterns up to here
MAX_EXACT_PERMUTATIONS = 100_000  # unpaired label permutations enumerated up to here
POWER_ALPHA = 0.05  # the `mde` column: two-sided alpha ...
POWER_TARGET = 0.8  # ... and power of a paired t test
# The sd `plan` assumes without --sd or a results folder: a typical sd (points) of
# a paired per-class delta for SimpleCNN on CIFAR-10 (1,000 test images a class
# alone give a binomial sd near 1.4 points per replica).
DEFAULT_SD = 2.0
PLAN_SEEDS = (2, 3, 4, 6, 8, 12, 16, 24, 32)

METRIC_COLUMNS = (
    "replica",
    "count",
    "seed",
    "paired",
    "epoch",
    "class_id",
    "class_name",
    "accuracy",
    "diverged",
)
SUMMARY_COLUMNS = (
    "count",
    "class_id",
    "class_name",
    "n_seeds",  # seeds (paired) or poisoned replicas (unpaired) analysed
    "n_clean",  # clean replicas they are compared with
    "n_diverged",  # seeds (paired) / replicas (unpaired) left out as diverged
    "clean_mean",  # percent
    "poisoned_mean",  # percent
    "delta_mean",  # points, poisoned minus clean
    "delta_sd",  # points; unpaired: sd of one poisoned-minus-clean difference
    "ci_low",  # t interval (paired t or Welch) at `level`
    "ci_high",
    "boot_low",  # bootstrap interval at `level`, method in boot_method
    "boot_high",
    "boot_method",
    "p_value",  # two-sided, method in p_method
    "p_method",
    "p_holm",  # adjusted across every count x class of the summary
    "p_bh",
    "twin_corr",  # Pearson r of clean vs poisoned twins across seeds
    "welch_low",  # Welch interval on the same numbers, twins treated as unrelated
    "welch_high",
    "width_ratio",  # t width / Welch width: below 1 means pairing narrowed it
    "mde",  # smallest |delta| detectable at alpha 0.05, power 0.8 (points)
    "level",
    "paired",
    "epoch",
)


def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return np.random.default_rng(0) if rng is None else rng


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise SweepError(f"--level must be between 0 and 1 (e.g. 0.95), got {level}")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


# Loading a results folder.


@dataclass(frozen=True)
class Results:
    """One sweep's results folder, read and checked.

    confusion and poisoned are None when their file is absent (older sweeps).
    """

    path: Path
    manifest: dict
    metrics: pd.DataFrame
    confusion: pd.DataFrame | None
    poisoned: pd.DataFrame | None


def _read_parquet(path: Path, *, required: bool) -> pd.DataFrame | None:
    if not path.is_file():
        if required:
            raise SweepError(
                f"{path.parent} has no {path.name}: the sweep is partial or failed"
            )
        return None
    try:
        return pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several unrelated types
        raise SweepError(f"cannot read {path}: {_one_line(error)}") from None


def load_results(results_dir: str | os.PathLike) -> Results:
    """Read a finished sweep's results folder, refusing missing or partial ones.

    Args:
      results_dir: the folder holding manifest.json and metrics.parquet.

    Returns:
      The checked tables and manifest.
    """
    path = Path(results_dir)
    if not path.exists():
        raise SweepError(f"results folder {path} does not exist")
    if not path.is_dir():
        raise SweepError(f"{path} is not a folder")
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise SweepError(f"{path} has no manifest.json: not a sweep results folder")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as error:
        raise SweepError(f"cannot read {manifest_path}: {_one_line(error)}") from None
    if not isinstance(manifest, dict):
        raise SweepError(f"{manifest_path} is not a JSON object")
    status = manifest.get("status", "complete")
    if status != "complete":
        raise SweepError(
            f"sweep in {path} is not complete (manifest status {status!r}); "
            "let it finish or resume it"
        )
    metrics = _read_parquet(path / "metrics.parquet", required=True)
    check_metrics(metrics, source=str(path / "metrics.parquet"))
    return Results(
        path=path,
        manifest=manifest,
        metrics=metrics,
        confusion=_read_parquet(path / "confusion.parquet", required=False),
        poisoned=_read_parquet(path / "poisoned.parquet", required=False),
    )


def check_metrics(metrics: pd.DataFrame, *, source: str = "metrics") -> None:
    """Refuse a metrics table the statistics cannot use, with one line saying why."""
    missing = [c for c in METRIC_COLUMNS if c not in metrics.columns]
    if missing:
        raise SweepError(f"{source} lacks column(s): {', '.join(missing)}")
    if len(metrics) == 0:
        raise SweepError(f"{source} has no rows: the sweep recorded nothing")
    if metrics["paired"].nunique() != 1:
        raise SweepError(f"{source} mixes paired and unpaired replicas")
    if not (metrics["count"] == 0).any():
        raise SweepError(f"{source} has no clean (count 0) replicas to compare with")
    if metrics.duplicated(["replica", "epoch", "class_id"]).any():
        raise SweepError(f"{source} repeats a replica x epoch x class row")
    per_replica = metrics.groupby("replica")[["count", "seed"]].nunique()
    if (per_replica > 1).any(axis=None):
        raise SweepError(f"{source} gives one replica several counts or seeds")
    if bool(metrics["paired"].iloc[0]):
        replicas = metrics.drop_duplicates("replica")
        if replicas.duplicated(["count", "seed"]).any():
            raise SweepError(f"{source} is paired but repeats a count x seed replica")


# The analysed epoch as arrays.


@dataclass(frozen=True)
class Design:
    """One epoch of a sweep laid out as arrays.

    accuracy[i] holds count counts[i] (counts[0] == 0, the clean replicas):
      paired: (S, K) seed x class, rows aligned on `seeds` across counts, NaN
        rows where that replica is missing or diverged;
      unpaired: (n_i, K) replica x class, usable replicas only.
    present (C, S) says which paired replicas exist (unpaired: empty).
    n_diverged (C,) counts the diverged replicas of each count.
    """

    paired: bool
    epoch: int
    counts: np.ndarray  # (C,) int, ascending, 0 first
    class_ids: np.ndarray  # (K,) int
    class_names: tuple[str, ...]  # (K,)
    seeds: np.ndarray  # (S,) paired; all seeds seen when unpaired
    accuracy: tuple[np.ndarray, ...]  # (C,) of (S, K) or (n_i, K), percent
    present: np.ndarray  # (C, S) bool, paired only
    n_diverged: np.ndarray  # (C,) int


def design_of(metrics: pd.DataFrame, *, epoch: int | None = None) -> Design:
    """Lay out one epoch (default: the last) of a metrics table as arrays.

    A replica counts as diverged at `epoch` if it was flagged at or before it, or
    its accuracy there is not finite.
    """
    check_metrics(metrics)
    epochs = np.sort(metrics["epoch"].unique())
    if epoch is None:
        epoch = int(epochs[-1])
    elif epoch not in set(epochs.tolist()):
        raise SweepError(
            f"epoch {epoch} is not in the results (epochs {epochs[0]}-{epochs[-1]})"
        )
    table = metrics[metrics["epoch"] == epoch]
    early = metrics[metrics["epoch"] <= epoch]
    flagged = early.groupby("replica")["diverged"].any()
    accuracy = table.pivot(index="replica", columns="class_id", values="accuracy")
    accuracy = accuracy.sort_index(axis=1)
    class_ids = accuracy.columns.to_numpy(dtype=int)
    names = table.drop_duplicates("class_id").set_index("class_id")["class_name"]
    replicas = table.drop_duplicates("replica").set_index("replica")
    replicas = replicas.loc[accuracy.index, ["count", "seed"]]
    values = accuracy.to_numpy(dtype=float)  # (R, K)
    flags = flagged.reindex(accuracy.index, fill_value=False).to_numpy(dtype=bool)
    bad = flags | ~np.isfinite(values).all(axis=1)
    counts = np.sort(replicas["count"].unique()).astype(int)
    count_of = replicas["count"].to_numpy(dtype=int)
    seed_of = replicas["seed"].to_numpy(dtype=int)
    seeds = np.sort(np.unique(seed_of))
    paired = bool(table["paired"].iloc[0])
    n_diverged = np.array([int(bad[count_of == c].sum()) for c in counts])
    if paired:
        column = np.searchsorted(seeds, seed_of)
        grids, present = [], np.zeros((counts.size, seeds.size), dtype=bool)
        for i, c in enumerate(counts):
            grid = np.full((seeds.size, class_ids.size), np.nan)
            rows = count_of == c
            present[i, column[rows]] = True
            keep = rows & ~bad
            grid[column[keep]] = values[keep]
            grids.append(grid)
        groups = tuple(grids)
    else:
        present = np.zeros((counts.size, 0), dtype=bool)
        groups = tuple(values[(count_of == c) & ~bad] for c in counts)
    return Design(
        paired=paired,
        epoch=int(epoch),
        counts=counts,
        class_ids=class_ids,
        class_names=tuple(str(names[k]) for k in class_ids),
        seeds=seeds,
        accuracy=groups,
        present=present,
        n_diverged=n_diverged,
    )


# Intervals.


def t_interval(
    x: np.ndarray, *, level: float = 0.95
) -> tuple[float, tuple[float, float]]:
    """Student t interval for the mean (paired deltas: the paired t interval).

    Args:
      x: (n,) observations.
      level: confidence level.

    Returns:
      (mean, (low, high)); the interval is NaN when n < 2.
    """
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return math.nan, (math.nan, math.nan)
    mean = float(x.mean())
    if x.size < 2:
        return mean, (math.nan, math.nan)
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return mean, (mean - float(half), mean + float(half))


def welch_interval(
    x: np.ndarray, y: np.ndarray, *, level: float = 0.95
) -> tuple[float, tuple[float, float]]:
    """Welch interval for mean(x) - mean(y) of two independent samples.

    Args:
      x: (n_x,) e.g. poisoned accuracies.
      y: (n_y,) e.g. clean accuracies.
      level: confidence level.

    Returns:
      (difference, (low, high)); NaN interval when either sample has n < 2.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size == 0 or y.size == 0:
        return math.nan, (math.nan, math.nan)
    diff = float(x.mean() - y.mean())
    se, df = _welch_se_df(x, y)
    if math.isnan(se):
        return diff, (math.nan, math.nan)
    half = float(stats.t.ppf(0.5 + level / 2, df) * se) if se > 0 else 0.0
    return diff, (diff - half, diff + half)


def _welch_se_df(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Standard error of mean(x) - mean(y) and its Welch-Satterthwaite df."""
    if x.size < 2 or y.size < 2:
        return math.nan, math.nan
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    if vx + vy == 0:  # no spread at all: the df formula is 0/0
        return 0.0, float(x.size + y.size - 2)
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    return math.sqrt(vx + vy), float(df)


def bootstrap_interval(
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    level: float = 0.95,
    rng: np.random.Generator | None = None,
    n_resamples: int = DEFAULT_N_RESAMPLES,
) -> tuple[float, tuple[float, float], str]:
    """Bootstrap interval for mean(x), or mean(x) - mean(y) resampling each alone.

    BCa (scipy.stats.bootstrap) when every sample has n >= 3 and some spread;
    otherwise, or if BCa comes out undefined, the percentile interval.

    Args:
      x: (n_x,) e.g. paired deltas, or poisoned accuracies when y is given.
      y: (n_y,) clean accuracies for an unpaired difference, or None.
      level: confidence level.
      rng: the resampling generator.
      n_resamples: bootstrap resamples.

    Returns:
      (point, (low, high), method): method says which interval was computed.
    """
    samples = [np.asarray(x, dtype=float)]
    if y is not None:
        samples.append(np.asarray(y, dtype=float))
    if min(s.size for s in samples) == 0:
        return math.nan, (math.nan, math.nan), "none (no seeds)"
    point = float(samples[0].mean() - (samples[1].mean() if y is not None else 0.0))
    if min(s.size for s in samples) < 2:
        return point, (math.nan, math.nan), "none (n < 2)"
    if all(np.ptp(s) == 0 for s in samples):
        return point, (point, point), "degenerate (no spread)"

    def statistic(*data: np.ndarray, axis: int) -> np.ndarray:
        mean = data[0].mean(axis=axis)
        return mean - data[1].mean(axis=axis) if len(data) == 2 else mean

    bca = min(s.size for s in samples) >= 3
    with warnings.catch_warnings():
        # An undefined BCa interval warns and returns NaN; we fall back instead.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            tuple(samples),
            statistic,
            vectorized=True,
            n_resamples=n_resamples,
            confidence_level=level,
            method="BCa" if bca else "percentile",
            rng=_rng(rng),
        )
    low, high = result.confidence_interval
    if bca and np.isfinite([low, high]).all():
        return point, (float(low), float(high)), "BCa"
    low, high = np.quantile(
        result.bootstrap_distribution, [0.5 - level / 2, 0.5 + level / 2]
    )
    why = "BCa undefined" if bca else "n < 3"
    return point, (float(low), float(high)), f"percentile ({why})"


# Tests and multiplicity.


@functools.lru_cache(maxsize=MAX_EXACT_SEEDS + 1)
def _sign_patterns(n: int) -> np.ndarray:
    """All 2^n sign patterns as a read-only (2^n, n) array of +-1."""
    bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    patterns = (1 - 2 * bits).astype(float)
    patterns.flags.writeable = False
    return patterns


def sign_flip_test(
    deltas: np.ndarray,
    *,
    rng: np.random.Generator | None = None,
    max_exact: int = MAX_EXACT_SEEDS,
    n_resamples: int = DEFAULT_N_RESAMPLES,
) -> tuple[float, str]:
    """Two-sided sign-flip permutation test that paired deltas centre on 0.

    Under the null a delta is as likely negative as positive, so every sign
    pattern is equally likely; p is the share of patterns whose |sum| reaches the
    observed |sum|. Exact over all 2^n patterns for n <= max_exact, else Monte
    Carlo: (1 + hits) / (1 + n_resamples).

    Args:
      deltas: (n,) paired differences.
      rng: generator for the Monte Carlo case.
      max_exact: largest n enumerated exactly.
      n_resamples: Monte Carlo sign patterns.

    Returns:
      (p_value, method).
    """
    d = np.asarray(deltas, dtype=float)
    if d.size == 0:
        return math.nan, "none (no seeds)"
    observed = abs(d.sum())
    # Deltas are multiples of 100/n_test, so ties are common: compare with a
    # tolerance well above float rounding of the sums.
    tol = 1e-9 * np.abs(d).sum()
    if d.size <= max_exact:
        null = np.abs(_sign_patterns(d.size) @ d)
        return float(np.mean(null >= observed - tol)), f"sign-flip exact (2^{d.size})"
    signs = _rng(rng).choice(np.array([-1.0, 1.0]), size=(n_resamples, d.size))
    hits = int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
    p = (hits + 1) / (n_resamples + 1)
    return p, f"sign-flip Monte Carlo ({n_resamples})"


def permutation_test(
    x: np.ndarray,
    y: np.ndarray,
    *,
    rng: np.random.Generator | None = None,
    max_exact: int = MAX_EXACT_PERMUTATIONS,
    n_resamples: int = DEFAULT_N_RESAMPLES,
) -> tuple[float, str]:
    """Two-sided permutation test of labels for mean(x) - mean(y), unpaired.

    p is the share of relabellings (which n_x of the pooled values are called x)
    whose |difference of means| reaches the observed one, as the sign-flip test
    does. Exact over all relabellings when there are at most max_exact, else
    Monte Carlo: (1 + hits) / (1 + n_resamples).

    Args:
      x: (n_x,) e.g. poisoned accuracies.
      y: (n_y,) e.g. clean accuracies.
      rng: generator for the Monte Carlo case.
      max_exact: most relabellings enumerated.
      n_resamples: Monte Carlo relabellings.

    Returns:
      (p_value, method).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size == 0 or y.size == 0:
        return math.nan, "none (no replicas)"
    pooled = np.concatenate([x, y])
    total = pooled.sum()

    def gaps(x_sums: np.ndarray) -> np.ndarray:
        return np.abs(x_sums / x.size - (total - x_sums) / y.size)

    observed = gaps(np.array([x.sum()]))[0]
    tol = 1e-9 * np.abs(pooled).sum()  # ties on the 0.1-point accuracy grid
    if math.comb(pooled.size, x.size) <= max_exact:
        chosen = np.array(list(itertools.combinations(range(pooled.size), x.size)))
        p = float(np.mean(gaps(pooled[chosen].sum(axis=1)) >= observed - tol))
        return p, "permutation exact"
    shuffled = _rng(rng).permuted(np.tile(pooled, (n_resamples, 1)), axis=1)
    hits = int(
        np.count_nonzero(gaps(shuffled[:, : x.size].sum(axis=1)) >= observed - tol)
    )
    p = (hits + 1) / (n_resamples + 1)
    return p, f"permutation Monte Carlo ({n_resamples})"


def _adjusted(p_values: np.ndarray, step) -> np.ndarray:
    """Apply `step` (sorted p-values -> adjusted, same order) to the finite
    p-values; NaN entries are not part of the family and stay NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    q = p[ok]
    if q.size == 0:
        return out
    order = np.argsort(q, kind="stable")
    adjusted = np.empty(q.size)
    adjusted[order] = np.minimum(1.0, step(q[order]))
    out[ok] = adjusted
    return out


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error), NaNs left out.

    Args:
      p_values: (m,) raw p-values; NaN entries are not part of the family.

    Returns:
      (m,) adjusted p-values, NaN where the input was.
    """

    def step(q):
        return np.maximum.accumulate((q.size - np.arange(q.size)) * q)

    return _adjusted(p_values, step)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), NaNs left out.

    Args:
      p_values: (m,) raw p-values; NaN entries are not part of the family.

    Returns:
      (m,) adjusted p-values, NaN where the input was.
    """

    def step(q):
        scaled = q * q.size / np.arange(1, q.size + 1)
        return np.minimum.accumulate(scaled[::-1])[::-1]

    return _adjusted(p_values, step)
    order = np.argsort(q, kind="stable")
    scaled = q[order] * q.size / np.arange(1, q.size + 1)
    adjusted = np.empty(q.size)
    adjusted[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    out[ok] = adjusted
    return out


# Power.


def power_t(effect: float, se: float, df: float, *, alpha: float = 0.05) -> float:
    """Power of a two-sided t test to detect `effect` given its standard error.

    Args:
      effect: true difference (points).
      se: standard error of the estimate (points).
      df: degrees of freedom.
      alpha: two-sided significance level.

    Returns:
      Probability of rejecting (noncentral t, scipy.stats.nct).
    """
    if se == 0:
        return 1.0 if effect != 0 else alpha
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = abs(effect) / se
    # P(T < -c | shift) written as P(T > c | -shift): nct.cdf far in the lower
    # tail returns NaN where sf returns its (negligible) value.
    upper = stats.nct.sf(critical, df, shift)
    lower = stats.nct.sf(critical, df, -shift)
    return float(upper + lower)


def paired_power(effect: float, sd: float, n: int, *, alpha: float = 0.05) -> float:
    """Power of a paired t test with n seeds and delta sd `sd` (points)."""
    if n < 2:
        return math.nan
    return power_t(effect, sd / math.sqrt(n), n - 1, alpha=alpha)


def _mde_from_se(se: float, df: float, *, alpha: float, power: float) -> float:
    if not (np.isfinite(se) and np.isfinite(df)) or df <= 0:
        return math.nan
    if se == 0:
        return 0.0

    def gap(shift: float) -> float:
        return power_t(shift, 1.0, df, alpha=alpha) - power

    high = 4.0
    while gap(high) < 0:
        high *= 2
    return float(optimize.brentq(gap, 0.0, high, xtol=1e-10)) * se


def min_detectable_effect(
    sd: float, n: int, *, alpha: float = POWER_ALPHA, power: float = POWER_TARGET
) -> float:
    """Smallest |delta| (points) a paired t test on n seeds detects with `power`.

    Args:
      sd: sd of the paired deltas (points).
      n: seeds.
      alpha: two-sided significance level.
      power: wanted probability of detection.

    Returns:
      The effect in points; NaN when n < 2 or sd is not finite.
    """
    if n < 2 or not np.isfinite(sd):
        return math.nan
    return _mde_from_se(sd / math.sqrt(n), n - 1, alpha=alpha, power=power)


def seeds_needed(
    effect: float,
    sd: float,
    *,
    alpha: float = POWER_ALPHA,
    power: float = POWER_TARGET,
    max_seeds: int = 1_000_000,
) -> int:
    """Fewest seeds for a paired t test to detect `effect` with `power`.

    Args:
      effect: the difference to detect (points, > 0).
      sd: sd of the paired deltas (points, > 0).
      alpha: two-sided significance level.
      power: wanted probability of detection.
      max_seeds: give up above this.

    Returns:
      The number of seeds (at least 2).
    """
    if not effect > 0:
        raise SweepError(f"--effect must be positive, got {effect}")
    if not sd > 0:
        raise SweepError(f"--sd must be positive, got {sd}")
    if paired_power(effect, sd, 2, alpha=alpha) >= power:
        return 2
    low, high = 2, 4
    while paired_power(effect, sd, high, alpha=alpha) < power:
        low, high = high, high * 2
        if high > max_seeds:
            raise SweepError(f"detecting {effect} points needs over {max_seeds} seeds")
    while high - low > 1:  # power grows with n: bisect on low < n <= high
        middle = (low + high) // 2
        if paired_power(effect, sd, middle, alpha=alpha) >= power:
            high = middle
        else:
            low = middle
    return high


# The summary table.


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r, NaN below 3 pairs or without spread (np.corrcoef would warn)."""
    if x.size < 3:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return float(dx @ dy) / denominator if denominator > 0 else math.nan


def _cell(
    clean: np.ndarray,
    poisoned: np.ndarray,
    *,
    paired: bool,
    level: float,
    rng: np.random.Generator,
    n_resamples: int,
) -> dict:
    """Every statistic of one count x class; clean, poisoned: (n,) usable values."""
    nan2 = (math.nan, math.nan)
    row = {
        "n_seeds": poisoned.size,
        "n_clean": clean.size,
        "clean_mean": float(clean.mean()) if clean.size else math.nan,
        "poisoned_mean": float(poisoned.mean()) if poisoned.size else math.nan,
    }
    enough = min(clean.size, poisoned.size) >= 2
    if paired:
        deltas = poisoned - clean
        delta, ci = t_interval(deltas, level=level)
        sd = float(deltas.std(ddof=1)) if deltas.size >= 2 else math.nan
        boot = bootstrap_interval(deltas, level=level, rng=rng, n_resamples=n_resamples)
        p, p_method = sign_flip_test(deltas, rng=rng, n_resamples=n_resamples)
        _, welch = welch_interval(poisoned, clean, level=level)
        mde = min_detectable_effect(sd, deltas.size)
        corr = _pearson(clean, poisoned)
    else:
        delta, ci = welch_interval(poisoned, clean, level=level)
        welch = ci
        sd = math.nan
        if enough:
            sd = math.sqrt(poisoned.var(ddof=1) + clean.var(ddof=1))
        boot = bootstrap_interval(
            poisoned, clean, level=level, rng=rng, n_resamples=n_resamples
        )
        p, p_method = permutation_test(
            poisoned, clean, rng=rng, n_resamples=n_resamples
        )
        se, df = _welch_se_df(poisoned, clean)
        mde = _mde_from_se(se, df, alpha=POWER_ALPHA, power=POWER_TARGET)
        corr = math.nan
    if not enough:  # one seed: a p-value of 1 from two sign patterns says nothing
        p, p_method = math.nan, "none (n < 2)"
        ci = welch = nan2
    width, welch_width = ci[1] - ci[0], welch[1] - welch[0]
    ratio = width / welch_width if paired and welch_width > 0 else math.nan
    row.update(
        delta_mean=delta,
        delta_sd=sd,
        ci_low=ci[0],
        ci_high=ci[1],
        boot_low=boot[1][0],
        boot_high=boot[1][1],
        boot_method=boot[2],
        p_value=p,
        p_method=p_method,
        twin_corr=corr,
        welch_low=welch[0],
        welch_high=welch[1],
        width_ratio=ratio,
        mde=mde,
    )
    return row


def summarize(
    metrics: pd.DataFrame,
    *,
    level: float = 0.95,
    rng: np.random.Generator | None = None,
    epoch: int | None = None,
    n_resamples: int = DEFAULT_N_RESAMPLES,
) -> pd.DataFrame:
    """Every statistic of poisoned vs clean, one row per count x class (count > 0).

    Paired sweeps: deltas are poisoned minus the clean twin of the same seed, and
    seeds where either twin diverged are dropped (n_diverged). Unpaired: the
    difference of means with a Welch interval and a label-permutation p-value.
    p_holm and p_bh adjust across all rows. Columns: SUMMARY_COLUMNS. With fewer
    than 2 seeds intervals and p-values are NaN (see `seeds_note`).

    Args:
      metrics: the sweep's metrics table (replica x epoch x class rows).
      level: confidence level of every interval.
      rng: generator for bootstrap and Monte Carlo draws.
      epoch: the epoch analysed; None for the last.
      n_resamples: bootstrap resamples and Monte Carlo permutations.

    Returns:
      The summary, sorted by count then class_id.
    """
    _check_level(level)
    rng = _rng(rng)
    design = design_of(metrics, epoch=epoch)
    clean_all = design.accuracy[0]
    rows = []
    for i in range(1, design.counts.size):
        poisoned_all = design.accuracy[i]
        if design.paired:
            usable = np.isfinite(clean_all[:, 0]) & np.isfinite(poisoned_all[:, 0])
            both = design.present[0] & design.present[i]
            n_diverged = int(both.sum() - usable.sum())
            clean, poisoned = clean_all[usable], poisoned_all[usable]
        else:
            n_diverged = int(design.n_diverged[0] + design.n_diverged[i])
            clean, poisoned = clean_all, poisoned_all
        for k, class_id in enumerate(design.class_ids):
            row = {
                "count": int(design.counts[i]),
                "class_id": int(class_id),
                "class_name": design.class_names[k],
                "n_diverged": n_diverged,
            }
            row.update(
                _cell(
                    clean[:, k],
                    poisoned[:, k],
                    paired=design.paired,
                    level=level,
                    rng=rng,
                    n_resamples=n_resamples,
                )
            )
            rows.append(row)
    if not rows:  # a clean-only sweep: nothing to compare, not an error here
        return pd.DataFrame({c: [] for c in SUMMARY_COLUMNS})
    summary = pd.DataFrame(rows)
    summary["p_holm"] = holm(summary["p_value"].to_numpy())
    summary["p_bh"] = benjamini_hochberg(summary["p_value"].to_numpy())
    summary["level"] = level
    summary["paired"] = design.paired
    summary["epoch"] = design.epoch
    return summary[list(SUMMARY_COLUMNS)]


def accuracy_by_count(
    metrics: pd.DataFrame, *, level: float = 0.95, epoch: int | None = None
) -> pd.DataFrame:
    """Mean accuracy of every count x class (count 0 too) with its own t interval.

    Each group is taken alone (usable replicas of that count), as a bar chart of
    clean vs poisoned accuracy shows it.

    Args:
      metrics: the sweep's metrics table.
      level: interval level.
      epoch: the epoch analysed; None for the last.

    Returns:
      Rows count, class_id, class_name, n, mean, low, high (percent).
    """
    _check_level(level)
    design = design_of(metrics, epoch=epoch)
    rows = []
    for count, group in zip(design.counts, design.accuracy, strict=True):
        group = group[np.isfinite(group).all(axis=1)]
        for k, class_id in enumerate(design.class_ids):
            mean, (low, high) = t_interval(group[:, k], level=level)
            rows.append(
                {
                    "count": int(count),
                    "class_id": int(class_id),
                    "class_name": design.class_names[k],
                    "n": group.shape[0],
                    "mean": mean,
                    "low": low,
                    "high": high,
                }
            )
    return pd.DataFrame(rows)


def seeds_note(summary: pd.DataFrame) -> str | None:
    """One line saying why intervals are missing, or None when every row has them.

    Args:
      summary: a `summarize` table.

    Returns:
      e.g. "intervals need at least 2 seeds; this sweep has 1", or None.
    """
    n = summary["n_seeds"].to_numpy()
    if "n_clean" in summary.columns:
        n = np.minimum(n, summary["n_clean"].to_numpy())
    if n.size == 0 or n.min() >= 2:
        return None
    head = "intervals need at least 2 seeds; "
    run = int((summary["n_seeds"] + summary["n_diverged"]).max())
    if n.max() < 2 and run < 2:
        return head + f"this sweep has {run}"
    if n.max() < 2:
        return head + f"at most {int(n.max())} per count is left after divergence"
    short = ", ".join(str(c) for c in sorted(set(summary.loc[n < 2, "count"])))
    return head + f"after dropping diverged replicas count(s) {short} have fewer"


def min_attainable_p(n_seeds: int) -> float:
    """The smallest p-value the exact sign-flip test can give with n seeds.

    Two of the 2^n sign patterns (all +, all -) always reach the observed |sum|,
    so p >= 2 / 2^n: with 8 seeds 0.0078, which Holm over 50 rows lifts to 0.39.
    """
    return 2.0 / 2**n_seeds if n_seeds >= 1 else math.nan


def smallest_significant_count(
    summary: pd.DataFrame, class_id: int, *, alpha: float = 0.05, adjust: str = "holm"
) -> int | None:
    """The smallest count whose effect on a class is significant after adjustment.

    Args:
      summary: a `summarize` table.
      class_id: the class.
      alpha: significance level.
      adjust: "holm" (family-wise) or "bh" (false discovery rate).

    Returns:
      The count, or None when no count is significant.
    """
    if adjust not in ("holm", "bh"):
        raise SweepError(f"adjustment must be 'holm' or 'bh', got {adjust!r}")
    rows = summary[(summary["class_id"] == class_id) & (summary[f"p_{adjust}"] < alpha)]
    return int(rows["count"].min()) if len(rows) else None


def pooled_delta_sd(summary: pd.DataFrame) -> float:
    """Pooled sd (points) of the deltas over all rows of a summary with n >= 2.

    Args:
      summary: a `summarize` table.

    Returns:
      sqrt(sum (n_i - 1) sd_i^2 / sum (n_i - 1)); NaN without any usable row.
    """
    ok = np.isfinite(summary["delta_sd"].to_numpy()) & (summary["n_seeds"] >= 2)
    rows = summary[ok]
    dof = rows["n_seeds"].to_numpy(dtype=float) - 1
    if dof.sum() <= 0:
        return math.nan
    return float(np.sqrt((dof * rows["delta_sd"].to_numpy() ** 2).sum() / dof.sum()))


# Dose-response and the threshold question.


def pava(
    y: np.ndarray, *, weights: np.ndarray | None = None, increasing: bool = True
) -> np.ndarray:
    """Weighted isotonic regression by pool-adjacent-violators, written plainly.

    Args:
      y: (n,) values in order of x.
      weights: (n,) positive weights, or None for equal weights.
      increasing: fit a non-decreasing (else non-increasing) sequence.

    Returns:
      (n,) the monotone sequence closest to y in weighted least squares.
    """
    y = np.asarray(y, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    if not increasing:
        return -pava(-y, weights=w, increasing=True)
    means, totals, lengths = [], [], []
    for value, weight in zip(y, w):
        means.append(value)
        totals.append(weight)
        lengths.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            weight = totals[-2] + totals[-1]
            means[-2] = (means[-2] * totals[-2] + means[-1] * totals[-1]) / weight
            totals[-2] = weight
            lengths[-2] += lengths[-1]
            del means[-1], totals[-1], lengths[-1]
    return np.repeat(means, lengths)


def isotonic_fit(
    y: np.ndarray, *, weights: np.ndarray | None = None, increasing: bool = True
) -> np.ndarray:
    """Weighted isotonic regression: scipy.optimize.isotonic_regression, else pava.

    Args:
      y: (n,) values in order of x.
      weights: (n,) positive weights, or None.
      increasing: direction of the fit.

    Returns:
      (n,) the fitted monotone sequence.
    """
    if hasattr(optimize, "isotonic_regression"):
        return optimize.isotonic_regression(y, weights=weights, increasing=increasing).x
    return pava(y, weights=weights, increasing=increasing)


def monotone_fit(
    y: np.ndarray, *, weights: np.ndarray | None = None
) -> tuple[np.ndarray, bool]:
    """Fit both directions and keep the one with the smaller weighted SSE.

    Args:
      y: (n,) values in order of x.
      weights: (n,) positive weights, or None.

    Returns:
      (fit (n,), increasing); a tie goes to the direction of y[-1] - y[0].
    """
    y = np.asarray(y, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    up = isotonic_fit(y, weights=w, increasing=True)
    down = isotonic_fit(y, weights=w, increasing=False)
    sse_up, sse_down = float(w @ (y - up) ** 2), float(w @ (y - down) ** 2)
    if math.isclose(sse_up, sse_down, rel_tol=1e-12, abs_tol=1e-12):
        increasing = bool(y[-1] >= y[0])
    else:
        increasing = sse_up < sse_down
    return (up if increasing else down), increasing


def _masked_mean(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean over finite entries and their number (np.nanmean warns on none)."""
    ok = np.isfinite(values)
    n = ok.sum(axis=axis)
    total = np.where(ok, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / n, n


def _curves(
    design: Design,
    k: int,
    *,
    deltas: bool,
    rng: np.random.Generator | None,
    n_boot: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean accuracy (or delta) per count for class index k, and its resamples.

    Paired: seeds are resampled jointly across counts (a seed's twins stay
    together). Unpaired: each count's replicas are resampled on their own.

    Returns:
      (curve (C,), n (C,) values behind each mean, boots (n_boot, C)); boots is
      empty when rng is None.
    """
    columns = [group[:, k] for group in design.accuracy]
    if design.paired:
        table = np.stack(columns, axis=1)  # (S, C)
        if deltas:
            table = table - table[:, :1]  # NaN wherever either twin is out

        def mean_of(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return _masked_mean(rows, axis=-2)

        curve, n = mean_of(table)
        boots = np.empty((0, len(columns)))
        if rng is not None and table.shape[0]:
            index = rng.integers(0, table.shape[0], (n_boot, table.shape[0]))
            boots = mean_of(table[index])[0]  # (B, S, C) -> (B, C)
        return curve, n, boots
    curve = np.array([c.mean() if c.size else math.nan for c in columns])
    n = np.array([c.size for c in columns])
    boots = np.empty((0, len(columns)))
    if rng is not None and n.min() > 0:
        boots = np.stack(
            [
                c[rng.integers(0, c.size, (n_boot, c.size))].mean(axis=1)
                for c in columns
            ],
            axis=1,
        )
    if deltas:
        curve = curve - curve[0]
        boots = boots - boots[:, :1]
    return curve, n, boots


def _refit(boots: np.ndarray, weights: np.ndarray, *, increasing: bool) -> np.ndarray:
    """Isotonic refit of each resampled curve; rows with a missing mean drop out."""
    keep = np.isfinite(boots).all(axis=1)
    return np.array(
        [isotonic_fit(b, weights=weights, increasing=increasing) for b in boots[keep]]
    ).reshape(-1, boots.shape[1])


def _class_index(design: Design, class_id: int) -> int:
    where = np.flatnonzero(design.class_ids == class_id)
    if where.size == 0:
        raise SweepError(f"class {class_id} is not in the results")
    return int(where[0])


def dose_response(
    metrics: pd.DataFrame,
    *,
    class_id: int,
    level: float = 0.95,
    rng: np.random.Generator | None = None,
    epoch: int | None = None,
    n_boot: int = DEFAULT_N_BOOT_CURVES,
    increasing: bool | None = None,
    absolute: bool = False,
) -> pd.DataFrame:
    """Mean delta of one class against count, its monotone fit and a seed band.

    The fit is isotonic over the counts (count 0 included, delta 0), weighted by
    seeds; its direction is `increasing`, or, when None, whichever direction fits
    better (smaller SSE). The band resamples seeds, refits in the same direction
    and takes percentiles at `level`. With `absolute` the curve is the mean
    accuracy itself (count 0: the clean mean), as `threshold_count` fits it.

    Args:
      metrics: the sweep's metrics table.
      class_id: the class.
      level: band level.
      rng: resampling generator.
      epoch: the epoch analysed; None for the last.
      n_boot: seed resamples.
      increasing: fit direction, or None to choose by SSE.
      absolute: fit mean accuracy (percent) instead of the delta.

    Returns:
      One row per count: count, n_seeds, delta_mean (accuracy_mean when
      absolute), fit, band_low, band_high, increasing.
    """
    _check_level(level)
    design = design_of(metrics, epoch=epoch)
    k = _class_index(design, class_id)
    curve, n, boots = _curves(
        design, k, deltas=not absolute, rng=_rng(rng), n_boot=n_boot
    )
    # Counts left without a usable seed drop out of the fit (NaN rows).
    ok = np.isfinite(curve) & (n > 0)
    fit = np.full(curve.shape, np.nan)
    low, high = fit.copy(), fit.copy()
    if ok.sum() >= 2:
        weights = n[ok].astype(float)
        if increasing is None:
            fit[ok], increasing = monotone_fit(curve[ok], weights=weights)
        else:
            fit[ok] = isotonic_fit(curve[ok], weights=weights, increasing=increasing)
        refits = _refit(boots[:, ok], weights, increasing=increasing)
        if len(refits) and n[ok].min() >= 2:
            quantiles = [0.5 - level / 2, 0.5 + level / 2]
            low[ok], high[ok] = np.quantile(refits, quantiles, axis=0)
    return pd.DataFrame(
        {
            "count": design.counts,
            "n_seeds": n.astype(int),
            "accuracy_mean" if absolute else "delta_mean": curve,
            "fit": fit,
            "band_low": low,
            "band_high": high,
            "increasing": increasing,
        }
    )


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


def threshold_count(
    metrics: pd.DataFrame,
    *,
    class_id: int,
    threshold: float,
    level: float = 0.95,
    rng: np.random.Generator | None = None,
    epoch: int | None = None,
    n_boot: int = DEFAULT_N_BOOT_CURVES,
) -> tuple[float, tuple[float, float]]:
    """How many labels must be flipped before a class's accuracy falls below X%.

    The mean accuracy of the class against count (count 0 = clean) is fitted
    non-increasing (isotonic), then `crossing` interpolates; the interval
    resamples seeds, refits and takes percentiles at `level`.

    Args:
      metrics: the sweep's metrics table.
      class_id: the class (usually the source class).
      threshold: accuracy in percent.
      level: interval level.
      rng: resampling generator.
      epoch: the epoch analysed; None for the last.
      n_boot: seed resamples.

    Returns:
      (count, (low, high)): inf means not reached within the counts tried (an
      inf high end: beyond the largest count); 0 means below it already when
      clean; NaN interval with fewer than 2 seeds; all NaN without clean
      replicas or any usable poisoned count.
    """
    _check_level(level)
    design = design_of(metrics, epoch=epoch)
    k = _class_index(design, class_id)
    curve, n, boots = _curves(design, k, deltas=False, rng=_rng(rng), n_boot=n_boot)
    ok = n > 0  # counts whose replicas all diverged drop out of the curve
    if not ok[0] or ok.sum() < 2:
        return math.nan, (math.nan, math.nan)
    counts, weights = design.counts[ok], n[ok].astype(float)
    fit = isotonic_fit(curve[ok], weights=weights, increasing=False)
    point = crossing(counts, fit, threshold)
    if n[ok].min() < 2:
        return point, (math.nan, math.nan)
    refits = _refit(boots[:, ok], weights, increasing=False)
    found = np.array([crossing(counts, f, threshold) for f in refits])
    # Order statistics, not interpolation: inf ends must stay inf.
    low, high = np.quantile(
        found, [0.5 - level / 2, 0.5 + level / 2], method="inverted_cdf"
    )
    return point, (float(low), float(high))


def describe_threshold(
    result: tuple[float, tuple[float, float]],
    *,
    threshold: float,
    class_name: str,
    largest_count: int,
    level: float = 0.95,
) -> str:
    """One sentence answering the threshold question from `threshold_count`."""

    def where(c: float) -> str:
        if c == math.inf:
            return f"beyond the largest count ({largest_count})"
        return f"{c:.1f}"

    point, (low, high) = result
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
    if math.isnan(low):
        return head + " (no interval: fewer than 2 seeds)."
    if low == high == math.inf:
        return head + f"; the {level:.0%} interval lies entirely beyond it."
    return head + f" ({level:.0%} interval {where(low)} to {where(high)})."


# Planning seeds.


def plan(
    effect: float,
    sd: float | None = None,
    alpha: float = POWER_ALPHA,
    power: float = POWER_TARGET,
    *,
    results_dir: str | os.PathLike | None = None,
    seeds: tuple[int, ...] | None = None,
) -> pd.DataFrame:
    """Seeds needed to detect `effect` points with a paired t test, and power by n.

    The sd of the paired deltas comes from `sd`, else from `results_dir` (pooled
    over its counts x classes), else DEFAULT_SD.

    Args:
      effect: difference to detect (points).
      sd: sd of paired deltas (points), or None.
      alpha: two-sided significance level.
      power: wanted power.
      results_dir: a finished sweep to take the sd from.
      seeds: seed numbers to tabulate (default PLAN_SEEDS).

    Returns:
      Rows seeds, power (for `effect`), mde (points at alpha and power), note
      ("needed" on the fewest seeds that reach `power`, "this sweep" on the
      sweep's own); attrs hold effect, sd, sd_source, alpha, power, needed.
    """
    if not effect > 0:
        raise SweepError(f"--effect must be positive, got {effect}")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise SweepError("alpha and power must be between 0 and 1")
    if sd is not None and results_dir is not None:
        raise SweepError("give either --sd or a results folder, not both")
    own = None
    if sd is not None:
        source = "given"
    elif results_dir is not None:
        summary = summarize(load_results(results_dir).metrics, n_resamples=99)
        sd = pooled_delta_sd(summary)
        own = int(summary["n_seeds"].max())
        if not np.isfinite(sd):
            raise SweepError(
                f"cannot estimate the sd from {results_dir}: it has {own} usable "
                "seed(s); pass --sd"
            )
        source = f"pooled over {len(summary)} count x class rows of {results_dir}"
    else:
        sd = DEFAULT_SD
        source = "default: a typical per-class paired delta, SimpleCNN on CIFAR-10"
    if not sd > 0:
        raise SweepError(f"--sd must be positive, got {sd}")
    needed = seeds_needed(effect, sd, alpha=alpha, power=power)
    ns = set(PLAN_SEEDS if seeds is None else seeds) | {needed}
    if own is not None and own >= 2:
        ns.add(own)
    if min(ns) < 2:
        raise SweepError("--seeds must all be at least 2")
    ns = sorted(ns)
    notes = [
        ", ".join(
            t for t, hit in (("needed", n == needed), ("this sweep", n == own)) if hit
        )
        for n in ns
    ]
    table = pd.DataFrame(
        {
            "seeds": ns,
            "power": [paired_power(effect, sd, n, alpha=alpha) for n in ns],
            "mde": [min_detectable_effect(sd, n, alpha=alpha, power=power) for n in ns],
            "note": notes,
        }
    )
    table.attrs.update(
        effect=effect, sd=sd, sd_source=source, alpha=alpha, power=power, needed=needed
    )
    return table


def format_plan(table: pd.DataFrame) -> str:
    """The `plan` table as text for the terminal, with its assumptions on top."""
    a = table.attrs
    points = f"{a['effect']:g} point{'' if a['effect'] == 1 else 's'}"
    head = (
        f"sd of paired deltas: {a['sd']:.2f} points ({a['sd_source']})\n"
        f"to detect {points} at alpha {a['alpha']:g} with power "
        f"{a['power']:.0%}: {a['needed']} seeds\n"
        f"(power: chance a paired t test on that many seeds detects {points}; "
        f"mde: smallest effect it detects with power {a['power']:.0%})\n"
    )
    body = table.to_string(
        index=False,
        formatters={"power": "{:.3f}".format, "mde": "{:.2f}".format},
    )
    return head + body
