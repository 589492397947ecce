"""A backdoor sweep's attack success as one row per replica, then as arrays.

The statistics read one row per replica (and epoch): its poisoned count, its
seed (twins of a seed share initial weights, data order and dropout) and, on
the stamped test set, `asr_hits` of `asr_n` stamped images (true class not the
target, or the source class) predicted as the target. Count 0 is the clean
twin: its ASR is the natural rate of a never-poisoned model. A sweep's
metrics.parquet carries `asr` (percent) and `n_stamped` per replica and epoch
(`sweep.results.tables`); `replica_table` turns them into those rows.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from sweep.errors import SweepError

ASR_COLUMNS = ("count", "seed", "asr_hits", "asr_n")  # + optional epoch, diverged


def replica_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per replica x epoch of a backdoor sweep's metrics table.

    Args:
      metrics: replica x epoch x class rows with `asr` (percent) and
        `n_stamped` repeated on the class rows of a replica and epoch.

    Returns:
      count, seed, epoch, paired, diverged, asr_hits, asr_n. The hits are
      recovered exactly: asr = 100 hits / n in float64, so asr n / 100 is
      within 1e-9 of a whole number for any test set size.
    """
    if "asr" not in metrics.columns or "n_stamped" not in metrics.columns:
        raise SweepError("these metrics have no asr column: not a backdoor sweep")
    keep = [c for c in ("replica", "count", "seed", "epoch", "paired", "diverged",
                        "asr", "n_stamped") if c in metrics.columns]
    rows = metrics[keep].drop_duplicates(
        [c for c in ("replica", "epoch") if c in keep]).copy()
    n = rows["n_stamped"].to_numpy(dtype=float)
    hits = np.round(rows["asr"].to_numpy(dtype=float) * n / 100.0)
    rows["asr_hits"], rows["asr_n"] = hits, n
    return rows.drop(columns=["asr", "n_stamped"]).reset_index(drop=True)


def as_replica_table(table: pd.DataFrame) -> pd.DataFrame:
    """`table` itself when it is per-replica ASR rows (it has `asr_hits`; a
    missing column is `asr_design`'s one line), else `replica_table(table)`."""
    if "asr_hits" in table.columns:
        return table
    return replica_table(table)


class AsrDesign(NamedTuple):
    """One epoch of a backdoor sweep's ASR as seed x count arrays.

    counts: (C,) ascending, 0 first; seeds: (S,); hits, n: (S, C), NaN where a
    replica is missing or diverged; n_diverged: (C,) replicas left out;
    paired: the replicas of a seed are twins (an unpaired sweep's counts are
    independent replicas: mean ASR intervals hold, the paired delta does not).
    """

    epoch: int | None
    counts: np.ndarray
    seeds: np.ndarray
    hits: np.ndarray
    n: np.ndarray
    n_diverged: np.ndarray
    paired: bool = True


def asr_design(table: pd.DataFrame, *, epoch: int | None = None) -> AsrDesign:
    """Check a per-replica ASR table and lay it out as (S, C) arrays.

    Args:
      table: rows with ASR_COLUMNS (count, seed, asr_hits, asr_n), optionally
        `epoch` (one row per replica and epoch) and `diverged` (a replica
        flagged at any epoch is left out at every epoch, as in the summary).
      epoch: the epoch analysed; None for the last (when there is an epoch
        column).

    Returns:
      The AsrDesign.
    """
    missing = [c for c in ASR_COLUMNS if c not in table.columns]
    if missing:
        raise SweepError(f"the ASR table lacks column(s): {', '.join(missing)}")
    if len(table) == 0:
        raise SweepError("the ASR table has no rows")
    paired = bool(table["paired"].all()) if "paired" in table.columns else True
    flagged = set()
    if "diverged" in table.columns:
        flagged = set(
            map(tuple, table.loc[table["diverged"], ["count", "seed"]].to_numpy())
        )
    if "epoch" in table.columns:
        epochs = np.sort(table["epoch"].unique())
        if epoch is None:
            epoch = int(epochs[-1])
        elif epoch not in set(epochs.tolist()):
            raise SweepError(f"epoch {epoch} is not in the ASR table")
        table = table[table["epoch"] == epoch]
    elif epoch is not None:
        raise SweepError("the ASR table has no epoch column to choose from")
    if table.duplicated(["count", "seed"]).any():
        raise SweepError("the ASR table repeats a count x seed replica")
    hits = table["asr_hits"].to_numpy(dtype=float)
    n = table["asr_n"].to_numpy(dtype=float)
    finite = np.isfinite(hits) & np.isfinite(n)
    bad = finite & ((hits < 0) | (hits > n) | (n < 1) | (hits != np.round(hits)))
    if bad.any():
        raise SweepError("asr_hits must be whole numbers between 0 and asr_n >= 1")
    counts = np.sort(table["count"].unique()).astype(int)
    if counts[0] != 0:
        raise SweepError("the ASR table has no clean (count 0) replicas")
    seeds = np.sort(table["seed"].unique()).astype(int)
    grid_hits = np.full((seeds.size, counts.size), np.nan)
    grid_n = np.full((seeds.size, counts.size), np.nan)
    n_diverged = np.zeros(counts.size, dtype=int)
    row = np.searchsorted(seeds, table["seed"].to_numpy(dtype=int))
    column = np.searchsorted(counts, table["count"].to_numpy(dtype=int))
    keys = zip(table["count"].to_numpy(), table["seed"].to_numpy(), strict=True)
    out = np.array([key in flagged for key in keys], dtype=bool) | ~finite
    np.add.at(n_diverged, column[out], 1)
    grid_hits[row[~out], column[~out]] = hits[~out]
    grid_n[row[~out], column[~out]] = n[~out]
    return AsrDesign(epoch, counts, seeds, grid_hits, grid_n, n_diverged, paired)

