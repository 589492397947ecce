"""The report's numbers: what its text states and the tables its figures draw.

Everything here is computed from the results tables through `sweep.stats`;
nothing is drawn or rendered (see `figures` and `rendering`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sweep import stats
from sweep.results.load import SweepTables

ALPHA = 0.05  # significance level the report's answers use
THRESHOLD_DROP = 10.0  # default threshold: this many points below clean accuracy


@dataclass(frozen=True)
class Facts:
    """The numbers the report states, independent of how they are rendered."""

    title: str
    paired: bool
    seeds: tuple[int, ...]  # every seed seen (unpaired: one per replica)
    per_count: int  # replicas per count
    counts: tuple[int, ...]  # poisoned counts, ascending
    epoch: int
    epochs: int
    level: float
    source: str
    target: str
    source_id: int
    target_id: int
    strategy: str
    diverged: tuple[tuple[int, int], ...]  # (count, seed) of diverged replicas
    seeds_note: str | None
    threshold: float
    threshold_given: bool
    threshold_result: tuple[float, tuple[tuple[float, float], ...]]  # threshold_set
    threshold_text: str
    effective: dict  # confirmatory class name -> smallest effective count or None
    stop_notes: dict  # confirmatory class name -> why none is declared, or None
    moved: tuple[int, ...]  # exploratory class ids declared (Holm) at some count
    n_exploratory: int  # exploratory rows with a p-value
    twin_corr: float  # median over rows
    unpaired_seeds: float  # seeds an unpaired sweep needs for intervals this narrow
    n_seeds: int  # usable seeds per count (largest)
    pooled_sd: float
    mde_source: float  # confirmatory mde, source class at the largest count
    mde_exploratory: float  # median exploratory mde
    seeds_for_one_point: int | None
    signflip_source: tuple[float, float]  # source at the largest count: p, floor
    alpha: float


def _median(values: pd.Series) -> float:
    finite = values.to_numpy(dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite)) if finite.size else math.nan


def _diverged(metrics: pd.DataFrame, epoch: int) -> tuple[tuple[int, int], ...]:
    # Flagged at any epoch: left out at every epoch (as sweep.stats does).
    flagged = metrics.groupby(["replica", "count", "seed"])["diverged"].any()
    rows = flagged[flagged].reset_index()
    return tuple(
        (int(c), int(s)) for c, s in zip(rows["count"], rows["seed"], strict=True)
    )


def facts_of(
    results: SweepTables,
    summary: pd.DataFrame,
    *,
    level: float,
    threshold: float | None,
) -> Facts:
    """Everything the report text states about a sweep.

    Args:
      results: the loaded results folder.
      summary: its `stats.summarize` table.
      level: interval level.
      threshold: source accuracy (percent) for the threshold question, or None
        for THRESHOLD_DROP points below the clean source accuracy (half of it
        when that is under twice the drop).

    Returns:
      The facts.
    """
    manifest, metrics = results.manifest, results.metrics
    config = manifest.get("config", {})
    names = list(
        summary.drop_duplicates("class_id").sort_values("class_id")["class_name"]
    )
    ids = sorted(summary["class_id"].unique().tolist())
    name_of = dict(zip(ids, names, strict=True))
    source_id = manifest.get("source_id")
    target_id = manifest.get("target_id")
    source_id = int(
        _most_moved(summary, lowest=True) if source_id is None else source_id
    )
    target_id = int(
        _most_moved(summary, lowest=False) if target_id is None else target_id
    )
    epoch = int(summary["epoch"].iloc[0])
    paired = bool(summary["paired"].iloc[0])
    clean = metrics[(metrics["count"] == 0) & (metrics["epoch"] == epoch)]
    clean = clean[clean["class_id"] == source_id]
    clean = clean[~clean["replica"].isin(diverged_replicas(metrics, epoch))]
    given = threshold is not None
    if threshold is None:
        start = float(clean["accuracy"].mean()) if len(clean) else 0.0
        # A weak model's clean accuracy may sit near the drop: halve it instead.
        threshold = (
            float(round(start - THRESHOLD_DROP))
            if start > 2 * THRESHOLD_DROP
            else round(start / 2, 1)
        )
    answer = stats.threshold_set(
        metrics, class_id=source_id, threshold=threshold, level=level
    )
    counts = tuple(sorted(int(c) for c in summary["count"].unique()))
    usable = summary[(summary["class_id"] == source_id) & (summary["n_seeds"] > 0)]
    text = stats.describe_threshold(
        answer,
        threshold=threshold,
        class_name=name_of[source_id],
        largest_count=int(usable["count"].max()) if len(usable) else counts[-1],
        level=level,
        # Welch's test with 2 df a group covers more than asked (docs).
        conservative=bool(
            not paired and len(usable) and usable["n_seeds"].min() <= 3
        ),
    )
    explore = summary[summary["family"] == stats.EXPLORATORY]
    moved = explore.groupby("class_id")["significant"].any()
    moved_ids = tuple(int(k) for k in moved[moved].index)
    effective = {
        name_of[k]: stats.smallest_effective_count(summary, k, alpha=ALPHA)
        for k in (source_id, target_id)
    }
    top = summary[(summary["count"] == counts[-1]) & (summary["class_id"] == source_id)]
    sd = stats.pooled_delta_sd(summary)
    n_seeds = int(summary["n_seeds"].max())
    # plan's power: a confirmatory test at alpha/2.
    test_alpha = stats.row_alpha(stats.CONFIRMATORY, alpha=ALPHA)
    return Facts(
        title=manifest.get("sweep_id", results.path.name),
        paired=paired,
        seeds=tuple(sorted(int(s) for s in metrics["seed"].unique())),
        per_count=int(metrics.drop_duplicates("replica").groupby("count").size().max()),
        counts=counts,
        epoch=epoch,
        epochs=int(metrics["epoch"].max()),
        level=level,
        source=name_of[source_id],
        target=name_of[target_id],
        source_id=source_id,
        target_id=target_id,
        strategy=str(config.get("strategy", "flip")),
        diverged=_diverged(metrics, epoch),
        seeds_note=stats.seeds_note(summary),
        threshold=threshold,
        threshold_given=given,
        threshold_result=answer,
        threshold_text=text,
        effective=effective,
        stop_notes={
            name_of[k]: stats.sequence_stop_note(summary, k, alpha=ALPHA)
            for k in (source_id, target_id)
        },
        moved=moved_ids,
        n_exploratory=int(explore["p_value"].notna().sum()),
        twin_corr=_median(summary["twin_corr"]),
        unpaired_seeds=stats.unpaired_seeds_equivalent(summary, level=level)
        if paired
        else math.nan,
        n_seeds=n_seeds,
        pooled_sd=sd,
        mde_source=float(top["mde"].iloc[0]) if len(top) else math.nan,
        mde_exploratory=_median(explore["mde"]),
        seeds_for_one_point=(
            stats.seeds_needed(1.0, sd, alpha=test_alpha)
            if np.isfinite(sd) and sd > 0
            else None
        ),
        signflip_source=(
            (float(top["p_signflip"].iloc[0]), float(top["p_signflip_floor"].iloc[0]))
            if len(top)
            else (math.nan, math.nan)
        ),
        alpha=ALPHA,
    )


def _most_moved(summary: pd.DataFrame, *, lowest: bool) -> int:
    """Old manifests without source/target ids: the class that moved most."""
    top = summary[summary["count"] == summary["count"].max()]
    row = top.loc[top["delta_mean"].idxmin() if lowest else top["delta_mean"].idxmax()]
    return int(row["class_id"])


def diverged_replicas(metrics: pd.DataFrame, epoch: int) -> set[int]:
    # Flagged at any epoch: left out at every epoch (as sweep.stats does).
    flagged = metrics.groupby("replica")["diverged"].any()
    return set(flagged[flagged].index.tolist())


# Tables the figures draw.


def confusion_means(
    confusion: pd.DataFrame, *, epoch: int, skip: set[int], k: int
) -> dict[int, np.ndarray]:
    """count -> (K, K) row-normalised percent, mean over usable replicas."""
    table = confusion[(confusion["epoch"] == epoch) & ~confusion["replica"].isin(skip)]
    means = {}
    for count, group in table.groupby("count"):
        replicas = np.sort(group["replica"].unique())
        grid = np.zeros((replicas.size, k, k))  # (R, true, predicted)
        r = np.searchsorted(replicas, group["replica"].to_numpy())
        grid[r, group["true_id"], group["pred_id"]] = group["n"].to_numpy()
        totals = grid.sum(axis=2, keepdims=True)
        share = 100 * grid / np.where(totals > 0, totals, 1)
        means[int(count)] = share.mean(axis=0)
    return means


def class_distribution(
    labels: np.ndarray, poisoned: pd.DataFrame, k: int
) -> pd.DataFrame:
    """Training label counts per class, clean and after each count's poisoning.

    Args:
      labels: (N,) clean training labels.
      poisoned: poisoned.parquet rows; with per-seed draws the lowest seed is
        shown (every seed flips the same number of labels).
      k: number of classes.

    Returns:
      Rows: class id; columns: 0 (clean) and each count (images).
    """
    before = np.bincount(labels, minlength=k)
    columns = {0: before}
    for count, group in poisoned.groupby("count"):
        if int(count) == 0:
            continue
        group = group[group["seed"] == group["seed"].min()]
        after = (
            before
            - np.bincount(group["old_label"], minlength=k)
            + np.bincount(group["new_label"], minlength=k)
        )
        columns[int(count)] = after
    return pd.DataFrame(columns)


def training_curves(
    metrics: pd.DataFrame, *, level: float, skip: set[int]
) -> pd.DataFrame:
    """Per count x epoch mean and t interval over seeds of the per-epoch metrics.

    Returns:
      Rows count, epoch, metric, mean, low, high, n.
    """
    columns = ["train_loss", "test_loss", "train_accuracy", "test_accuracy"]
    per_replica = metrics.drop_duplicates(["replica", "epoch"])
    per_replica = per_replica[~per_replica["replica"].isin(skip)]
    rows = []
    for (count, epoch), group in per_replica.groupby(["count", "epoch"]):
        for column in columns:
            mean, (low, high) = stats.t_interval(
                group[column].to_numpy(dtype=float), level=level
            )
            rows.append(
                {
                    "count": int(count),
                    "epoch": int(epoch),
                    "metric": column,
                    "mean": mean,
                    "low": low,
                    "high": high,
                    "n": len(group),
                }
            )
    return pd.DataFrame(rows)
