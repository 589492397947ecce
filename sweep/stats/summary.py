"""The summary table: one row per count x class, every statistic the tool states.

`summarize` is the public entry point (also `sweep.summarize`): it takes a
metrics table (e.g. `pd.read_parquet(".../metrics.parquet")`) and returns exactly
the table the CLI writes to summary.parquet for the same settings. A trigger
backdoor's table (it has the `asr` column) gets one more row per count, the
attack success rate (class_id ASR_CLASS_ID), decided with the target class.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from sweep.errors import SweepError
from sweep.stats.attack_success import asr_deltas
from sweep.stats.backdoor_table import clean_cost, seed_grid
from sweep.stats.design import (
    DEFAULT_SOURCE,
    DEFAULT_TARGET,
    check_level,
    design_of,
    resolve_class,
)
from sweep.stats.intervals import (
    DEFAULT_N_RESAMPLES,
    _rng,
    _welch_se_df,
    permutation_test,
    sign_flip_floor,
    sign_flip_test,
    t_interval,
    t_test,
    welch_interval,
    welch_test,
)
from sweep.stats.multiplicity import (
    CONFIRMATORY,
    CONFIRMATORY_METHOD,
    EXPLORATORY,
    EXPLORATORY_METHOD,
    confirmatory_adjusted,
    holm,
)
from sweep.stats.power import POWER_ALPHA, POWER_TARGET, mde_from_se, row_alpha

SUMMARY_COLUMNS = (
    "count",
    "class_id",
    "class_name",
    "family",  # confirmatory (source, target) or exploratory (other classes)
    "n_seeds",  # seeds (paired) or poisoned replicas (unpaired) analysed
    "n_clean",  # clean replicas they are compared with
    "n_diverged",  # seeds (paired) / replicas (unpaired) left out as diverged
    "clean_mean",  # percent
    "poisoned_mean",  # percent
    "delta_mean",  # points, poisoned minus clean
    "delta_sd",  # points; unpaired: sd of one poisoned-minus-clean difference
    "ci_low",  # t interval (paired t, or Welch when unpaired) at `level`
    "ci_high",
    "p_value",  # two-sided, the t test of the interval (p_method)
    "p_method",
    "p_adjusted",  # by the row's family procedure (adjustment)
    "adjustment",
    "significant",  # p_adjusted <= alpha
    "alpha",  # familywise error rate of each family's decisions
    "p_signflip",  # robustness check: exact sign-flip (paired) / permutation
    "p_signflip_method",
    "p_signflip_floor",  # smallest p that test can give here (non-zero deltas)
    "twin_corr",  # Pearson r of clean vs poisoned twins across seeds
    "unpaired_sd",  # sd of poisoned minus clean if the twins were unrelated
    "mde",  # smallest |delta| the row's test detects with power 0.8 (points)
    "mde_alpha",  # the two-sided level of that test (alpha/2 or alpha/m)
    "level",
    "paired",
    "epoch",
)


# A backdoor's attack success rows: class_id and class_name of the summary row.
ASR_CLASS_ID = -1
ASR_CLASS_NAME = "ASR"
# ... and its clean-accuracy cost rows (test accuracy without the trigger,
# every class together): exploratory, paired t like the class rows.
CLEAN_ACCURACY_ID = -2
CLEAN_ACCURACY_NAME = "clean accuracy"


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
    """The statistics of one count x class; clean, poisoned: (n,) usable values."""
    row = {
        "n_seeds": poisoned.size,
        "n_clean": clean.size,
        "clean_mean": float(clean.mean()) if clean.size else math.nan,
        "poisoned_mean": float(poisoned.mean()) if poisoned.size else math.nan,
    }
    enough = min(clean.size, poisoned.size) >= 2
    sd = se = df = unpaired_sd = math.nan
    if enough:
        unpaired_sd = math.sqrt(poisoned.var(ddof=1) + clean.var(ddof=1))
    if paired:
        deltas = poisoned - clean
        delta, ci = t_interval(deltas, level=level)
        p = t_test(deltas)
        p_method = "paired t" if np.isfinite(p) or not enough else "none (no spread)"
        if deltas.size >= 2:
            sd = float(deltas.std(ddof=1))
            se, df = sd / math.sqrt(deltas.size), deltas.size - 1
        flip, flip_method = sign_flip_test(deltas, rng=rng, n_resamples=n_resamples)
        floor = sign_flip_floor(deltas)
        corr = _pearson(clean, poisoned)
    else:
        delta, ci = welch_interval(poisoned, clean, level=level)
        p = welch_test(poisoned, clean)
        p_method = "Welch t" if np.isfinite(p) or not enough else "none (no spread)"
        sd = unpaired_sd
        se, df = _welch_se_df(poisoned, clean)
        flip, flip_method = permutation_test(
            poisoned, clean, rng=rng, n_resamples=n_resamples
        )
        floor = math.nan
        if enough:  # equal groups: a relabelling and its mirror tie
            mirror = 2 if clean.size == poisoned.size else 1
            floor = mirror / math.comb(clean.size + poisoned.size, clean.size)
        corr = math.nan
    if not enough:  # one seed: a p-value of 1 from two sign patterns says nothing
        p, p_method, flip, flip_method = (
            math.nan,
            "none (n < 2)",
            math.nan,
            "none (n < 2)",
        )
        ci, floor = (math.nan, math.nan), math.nan
    row.update(
        delta_mean=delta,
        delta_sd=sd,
        ci_low=ci[0],
        ci_high=ci[1],
        p_value=p,
        p_method=p_method,
        p_signflip=flip,
        p_signflip_method=flip_method,
        p_signflip_floor=floor,
        twin_corr=corr,
        unpaired_sd=unpaired_sd,
        _se=se,
        _df=df,
    )
    return row


def summarize(
    metrics: pd.DataFrame,
    *,
    level: float = 0.95,
    epoch: int | None = None,
    classes: tuple[int | str | None, int | str] | None = None,
    alpha: float = POWER_ALPHA,
    rng: np.random.Generator | None = None,
    n_resamples: int = DEFAULT_N_RESAMPLES,
) -> pd.DataFrame:
    """Every statistic of poisoned vs clean, one row per count x class (count > 0).

    Paired sweeps: deltas are poisoned minus the clean twin of the same seed, and
    seeds where either twin diverged are dropped (n_diverged); the interval and
    p_value are the paired t's. Unpaired: the difference of means with Welch's
    interval and test. The confirmatory family (the two `classes`, every count)
    is decided by fixed-sequence testing from the largest count down
    (familywise error `alpha`, see sweep.stats.multiplicity); the other classes
    are exploratory, Holm-adjusted among themselves. p_signflip is the exact
    sign-flip (unpaired: label permutation) test, a robustness check.
    Columns: SUMMARY_COLUMNS. With fewer than 2 seeds intervals and p-values
    are NaN (see `seeds_note`).

    Args:
      metrics: the sweep's metrics table (replica x epoch x class rows), e.g.
        pd.read_parquet("results/<sweep>/metrics.parquet").
      level: confidence level of every interval.
      epoch: the epoch analysed; None for the last.
      classes: (source, target), ids or names: the confirmatory classes, fixed
        before looking at the data. None: the sweep's defaults, cat and dog.
        The CLI passes the sweep's own --source/--target. (None, target): no
        source class; the target's sequence starts at alpha/2 and nothing
        passes alpha to it. A trigger backdoor (metrics with `asr`): the
        confirmatory family is the attack success rate and the target class
        (each a fixed sequence at alpha/2, a sequence rejected at every count
        passing its alpha to the other: the source/target rule with ASR in
        the source's place); a source class, if any, is exploratory. The ASR
        rows' delta is the paired bootstrap-t of `sweep.stats.attack_success`
        (their `mde` is NaN: that test's power has no closed form).
      alpha: familywise error rate of the decisions (`significant`).
      rng: generator for Monte Carlo sign-flip / permutation draws (only used
        above 16 seeds or many unpaired relabellings); None: fixed seed 0.
      n_resamples: Monte Carlo draws for those.

    Returns:
      The summary, sorted by count then class_id.
    """
    check_level(level)
    if not 0 < alpha < 1:
        raise SweepError(f"alpha must be between 0 and 1, got {alpha}")
    rng = _rng(rng)
    design = design_of(metrics, epoch=epoch)
    source, target = (DEFAULT_SOURCE, DEFAULT_TARGET) if classes is None else classes
    try:
        confirmatory = (None if source is None else resolve_class(design, source),
                        resolve_class(design, target))
    except SweepError as error:
        if classes is None:
            raise SweepError(
                f"{error}: name the confirmatory classes, "
                "summarize(metrics, classes=(source, target))"
            ) from None
        raise
    if confirmatory[0] == confirmatory[1]:
        raise SweepError("the source and target classes must differ")
    backdoor = "asr" in metrics.columns
    if backdoor:  # ASR leads the target; a source class is exploratory
        confirmatory = (ASR_CLASS_ID, confirmatory[1])
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
                "family": CONFIRMATORY
                if int(class_id) in confirmatory
                else EXPLORATORY,
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
    if backdoor:
        rows += _asr_rows(metrics, rows, paired=design.paired, level=level,
                          epoch=design.epoch, rng=rng, n_resamples=n_resamples)
    summary = pd.DataFrame(rows)
    if backdoor:  # each count's ASR row first (class_id -1), clean accuracy next
        summary = summary.sort_values(["count", "class_id"], kind="stable")
        summary = summary.reset_index(drop=True)
    _decide(summary, confirmatory, alpha=alpha)
    summary["level"] = level
    summary["paired"] = design.paired
    summary["epoch"] = design.epoch
    return summary[list(SUMMARY_COLUMNS)].reset_index(drop=True)


def _asr_rows(metrics: pd.DataFrame, class_rows: list[dict], *, paired: bool,
              level: float, epoch: int | None, rng: np.random.Generator,
              n_resamples: int) -> list[dict]:
    """Per poisoned count, a backdoor's attack success row and its
    clean-accuracy cost row.

    The columns of a class row from the seeds' ASRs (percent; delta_sd,
    sign-flip check, twin correlation), with the interval and p-value of the
    paired bootstrap-t (`attack_success.asr_deltas`) in place of the t's;
    the clean-accuracy row is a class row of the replicas' test accuracy.
    """
    diverged = {r["count"]: r["n_diverged"] for r in class_rows}
    rows = []
    for d in asr_deltas(metrics, level=level, epoch=epoch, rng=rng):
        row = {"count": d["count"], "class_id": ASR_CLASS_ID,
               "class_name": ASR_CLASS_NAME, "family": CONFIRMATORY,
               "n_diverged": diverged.get(d["count"], 0)}
        row.update(_cell(d["clean"], d["poisoned"], paired=paired, level=level,
                         rng=rng, n_resamples=n_resamples))
        row.update(ci_low=d["ci_low"], ci_high=d["ci_high"], p_value=d["p_value"],
                   p_method=d["p_method"], _se=math.nan, _df=math.nan)
        rows.append(row)
    counts, grid = seed_grid(metrics, "test_accuracy", epoch=epoch)
    for j in range(1, counts.size):
        clean, poisoned, _, _ = clean_cost(grid, j, paired=paired, level=level)
        row = {"count": int(counts[j]), "class_id": CLEAN_ACCURACY_ID,
               "class_name": CLEAN_ACCURACY_NAME, "family": EXPLORATORY,
               "n_diverged": diverged.get(int(counts[j]), 0)}
        row.update(_cell(clean, poisoned, paired=paired, level=level, rng=rng,
                         n_resamples=n_resamples))
        rows.append(row)
    return rows


def _decide(
    summary: pd.DataFrame, confirmatory: tuple[int | None, int], *, alpha: float
) -> None:
    """Fill p_adjusted, adjustment, significant, alpha, mde, mde_alpha in place.

    confirmatory: (the sequence beside the target's: the source class, or
    ASR_CLASS_ID for a backdoor's attack success rate, or None; the target).
    """
    adjusted = np.full(len(summary), np.nan)
    source = (summary["class_id"] == confirmatory[0]).to_numpy()
    target = (summary["class_id"] == confirmatory[1]).to_numpy()
    target_p = summary.loc[target, "p_value"].to_numpy(dtype=float)
    # Rows are in ascending count within each class. Without a source class its
    # sequence never rejects (p = 1), so the target keeps its own alpha/2.
    source_p = (np.ones_like(target_p) if confirmatory[0] is None
                else summary.loc[source, "p_value"].to_numpy(dtype=float))
    source_adjusted, adjusted[target] = confirmatory_adjusted(source_p, target_p)
    if confirmatory[0] is not None:
        adjusted[source] = source_adjusted
    adjusted[~(source | target)] = np.nan  # n < 2 stays NaN below
    explore = ~(source | target)
    adjusted[explore] = holm(summary.loc[explore, "p_value"].to_numpy(dtype=float))
    adjusted[~np.isfinite(summary["p_value"].to_numpy(dtype=float))] = np.nan
    summary["p_adjusted"] = adjusted
    summary["adjustment"] = np.where(explore, EXPLORATORY_METHOD, CONFIRMATORY_METHOD)
    summary["significant"] = adjusted <= alpha
    summary["alpha"] = alpha
    m = int(np.isfinite(summary.loc[explore, "p_value"].to_numpy(dtype=float)).sum())
    levels = np.where(
        explore,
        row_alpha(EXPLORATORY, alpha=alpha, m_exploratory=m),
        row_alpha(CONFIRMATORY, alpha=alpha),
    )
    summary["mde_alpha"] = levels
    summary["mde"] = [
        mde_from_se(se, df, alpha=a, power=POWER_TARGET)
        for se, df, a in zip(summary["_se"], summary["_df"], levels, strict=True)
    ]


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
    check_level(level)
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


def _class_rows(summary: pd.DataFrame) -> np.ndarray:
    """(rows,) bool: the per-class rows (not a backdoor's ASR or clean-accuracy
    rows); every row of a table without class_id."""
    if "class_id" not in summary.columns:
        return np.ones(len(summary), dtype=bool)
    return (summary["class_id"] >= 0).to_numpy()


def pooled_delta_sd(summary: pd.DataFrame) -> float:
    """Pooled sd (points) of the class rows' deltas with n >= 2 (a backdoor's
    ASR and clean-accuracy rows left out: other quantities).

    Args:
      summary: a `summarize` table.

    Returns:
      sqrt(sum (n_i - 1) sd_i^2 / sum (n_i - 1)); NaN without any usable row.
    """
    ok = np.isfinite(summary["delta_sd"].to_numpy()) & (summary["n_seeds"] >= 2)
    ok &= _class_rows(summary)
    rows = summary[ok]
    dof = rows["n_seeds"].to_numpy(dtype=float) - 1
    if dof.sum() <= 0:
        return math.nan
    return float(np.sqrt((dof * rows["delta_sd"].to_numpy() ** 2).sum() / dof.sum()))


def unpaired_seeds_equivalent(summary: pd.DataFrame, *, level: float = 0.95) -> float:
    """Seeds an unpaired sweep would need for intervals as narrow as these.

    Compares like with like: the paired t interval of n seeds has half-width
    t(n-1) sd_d / sqrt(n); an unpaired sweep of m seeds per count (fresh seeds
    for clean and poisoned) has Welch half-width about t(2m-2) sd_u / sqrt(m),
    where sd_u^2 = var(poisoned) + var(clean) is estimated from the same
    replicas (pairing does not change a replica's own variance). Pooled over the
    rows with n >= 3 (variances averaged); returns the smallest m whose expected
    width is at most the paired one, NaN when not estimable.
    """
    rows = summary[(summary["n_seeds"] >= 3) & np.isfinite(summary["unpaired_sd"])
                   & _class_rows(summary)]
    rows = rows[np.isfinite(rows["delta_sd"])]
    if not len(rows):
        return math.nan
    n = int(np.median(rows["n_seeds"]))
    sd_d = math.sqrt(float((rows["delta_sd"] ** 2).mean()))
    sd_u = math.sqrt(float((rows["unpaired_sd"] ** 2).mean()))
    q = 0.5 + level / 2
    paired = stats.t.ppf(q, n - 1) * sd_d / math.sqrt(n)
    for m in range(2, 100_000):
        if stats.t.ppf(q, 2 * m - 2) * sd_u / math.sqrt(m) <= paired:
            return float(m)
    return math.inf
