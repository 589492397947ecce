"""A backdoor sweep's attack success per poison count: the dose-response table.

Reads the `asr`, `robust_accuracy` and `test_accuracy` columns a trigger
backdoor's metrics.parquet carries (sweep.results.tables). Per count (0, the
clean twins' natural rate, included): the mean ASR over the usable seeds with
its interval (`attack_success.mean_asr_by_count`: logit-normal fiducial,
conservative where events are few, one-sided where every seed is at the bound,
with the one line each needs), the lowest and highest seed, and the mean
robust and clean accuracy (descriptive). The paired delta against the clean
twin and its decision are the summary's ASR rows (`summarize`); the
clean-accuracy cost (test accuracy without the trigger, poisoned minus its
clean twin, paired t as the summary's accuracy rows) is `cost_*` here and the
summary's "clean accuracy" rows; the count at which ASR reaches X% is
`attack_success.asr_thresholds`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sweep.errors import SweepError
from sweep.stats.attack_success import (
    DEFAULT_ASR_THRESHOLDS,
    DEFAULT_DRAWS,
    asr_thresholds,
    mean_asr_by_count,
)
from sweep.stats.intervals import t_interval, welch_interval

COLUMNS = ("count", "n_seeds", "n_diverged", "asr_mean", "asr_low", "asr_high",
           "asr_method", "note", "asr_min", "asr_max", "robust_mean",
           "test_accuracy_mean", "cost_n", "cost_mean", "cost_low", "cost_high",
           "n_stamped", "level", "epoch")


def per_replica_asr(metrics: pd.DataFrame, *, epoch: int) -> pd.DataFrame:
    """count, seed, asr (percent) of every replica not diverged, at one epoch."""
    flagged = metrics.groupby("replica")["diverged"].any()
    rows = metrics[metrics["epoch"] == epoch].groupby("replica").first()
    rows = rows[~flagged.reindex(rows.index).fillna(True).to_numpy(bool)]
    return rows[["count", "seed", "asr"]].reset_index(drop=True)


def seed_grid(
    metrics: pd.DataFrame, column: str, *, epoch: int
) -> tuple[np.ndarray, np.ndarray]:
    """One per-replica column at one epoch as a (seed x count) grid.

    Args:
      metrics: a sweep's metrics table (the column repeated on class rows).
      column: e.g. "test_accuracy".
      epoch: the epoch.

    Returns:
      (counts (C,) ascending, values (S, C)): NaN where a replica is missing
      or diverged at any epoch (left out, as in the summary).
    """
    flagged = metrics.groupby("replica")["diverged"].any()
    rows = metrics[metrics["epoch"] == epoch].groupby("replica").first()
    rows = rows[~flagged.reindex(rows.index).fillna(True).to_numpy(bool)]
    grid = rows.pivot_table(index="seed", columns="count", values=column,
                            aggfunc="first")
    everything = np.sort(metrics["count"].unique())
    grid = grid.reindex(columns=everything)
    return everything.astype(int), grid.to_numpy(dtype=float)


def clean_cost(
    grid: np.ndarray, j: int, *, paired: bool, level: float
) -> tuple[np.ndarray, np.ndarray, float, tuple[float, float]]:
    """Clean-accuracy cost of count column j against column 0 of a seed grid.

    Returns:
      (clean, poisoned) usable values (paired: the seeds with both twins),
      the mean delta (points) and its paired t (unpaired: Welch) interval.
    """
    if paired:
        ok = np.isfinite(grid[:, 0]) & np.isfinite(grid[:, j])
        clean, poisoned = grid[ok, 0], grid[ok, j]
        delta, ci = t_interval(poisoned - clean, level=level)
    else:
        clean = grid[np.isfinite(grid[:, 0]), 0]
        poisoned = grid[np.isfinite(grid[:, j]), j]
        delta, ci = welch_interval(poisoned, clean, level=level)
    return clean, poisoned, delta, ci


def asr_by_count(
    metrics: pd.DataFrame,
    *,
    level: float = 0.95,
    epoch: int | None = None,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
) -> pd.DataFrame:
    """Attack success per count at one epoch, over replicas that did not diverge.

    Args:
      metrics: a backdoor sweep's metrics table (replica x epoch x class rows).
      level: confidence level of the mean ASR interval.
      epoch: the epoch; None for the last.
      draws: Monte Carlo draws per interval.
      rng: generator; None: fixed seed 0.
    Returns:
      One row per count (0 included), COLUMNS; percentages, like the table's.
    """
    if "asr" not in metrics.columns:
        raise SweepError("these metrics have no asr column: not a backdoor sweep")
    table = mean_asr_by_count(metrics, level=level, epoch=epoch, draws=draws,
                              rng=rng)
    epoch = int(table["epoch"].iloc[0])
    flagged = metrics.groupby("replica")["diverged"].any()  # any epoch: left out
    rows = metrics[(metrics["epoch"] == epoch)
                   & ~metrics["replica"].map(flagged).to_numpy(bool)]
    per_replica = rows.groupby("replica").first()
    described = per_replica.groupby("count").agg(
        asr_min=("asr", "min"), asr_max=("asr", "max"),
        robust_mean=("robust_accuracy", "mean"),
        test_accuracy_mean=("test_accuracy", "mean"),
        n_stamped=("n_stamped", "first"))
    table = table.join(described, on="count")
    counts, grid = seed_grid(metrics, "test_accuracy", epoch=epoch)
    paired = bool(metrics["paired"].all()) if "paired" in metrics else True
    cost = {"cost_n": [], "cost_mean": [], "cost_low": [], "cost_high": []}
    for count in table["count"]:
        j = int(np.searchsorted(counts, count))
        if count == 0:
            values = (0, np.nan, np.nan, np.nan)
        else:
            _, poisoned, delta, ci = clean_cost(grid, j, paired=paired, level=level)
            values = (poisoned.size, delta, *ci)
        for key, value in zip(cost, values, strict=True):
            cost[key].append(value)
    table = table.assign(**cost)
    table["n_stamped"] = table["n_stamped"].fillna(0).astype(int)
    return table[list(COLUMNS)]


THRESHOLD_COLUMNS = ("threshold", "count", "low", "high", "share", "share_low",
                     "share_high", "pieces", "statement", "level")


def threshold_table(
    metrics: pd.DataFrame,
    *,
    n_train: int,
    thresholds: tuple[float, ...] = DEFAULT_ASR_THRESHOLDS,
    level: float = 0.95,
    epoch: int | None = None,
) -> pd.DataFrame:
    """The poisoned count (and share of the training set) at which mean ASR
    first reaches each threshold, with its confidence set, as a flat table.

    Args:
      metrics: a backdoor sweep's metrics table.
      n_train: training images (the share's denominator).
      thresholds: percents (default 50 and 90).
      level: confidence level of the set.
      epoch: the epoch; None for the last.

    Returns:
      THRESHOLD_COLUMNS: count and the set's hull (low, high; inf = beyond the
      largest count, NaN = no set), the same as percent of n_train, the set's
      pieces as text ("lo-hi; lo-hi") and the one-sentence statement.
    """
    table = asr_thresholds(metrics, thresholds=thresholds, level=level, epoch=epoch)
    table["share"] = 100 * table["count"] / n_train
    table["share_low"] = 100 * table["low"] / n_train
    table["share_high"] = 100 * table["high"] / n_train
    table["pieces"] = ["; ".join(f"{lo:g}-{hi:g}" for lo, hi in pieces)
                       for pieces in table["pieces"]]
    table["level"] = level
    return table[list(THRESHOLD_COLUMNS)]
