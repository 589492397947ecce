"""An attack matrix's tables: its pairs, one pair's slice, the summary per pair.

Tables: a matrix's metrics and confusion rows carry `source` and `target` class
ids; the shared clean replicas have source = target = -1 (`CLEAN`). (A one-pair
sweep's tables keep their old columns; its pair is in the manifest.) The summary
is computed per pair, by `summarize` on that pair's replicas plus the shared
clean ones, and gains `source` and `target` columns. Each pair's source and
target are its confirmatory classes, so the decision rule (`p_adjusted`,
`significant`) controls the familywise error within each pair, not across the
matrix.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sweep.results.tables import CLEAN
from sweep.stats.summary import summarize


def pairs_of(metrics: pd.DataFrame) -> list[tuple[int, int]]:
    """The (source, target) pairs a metrics table holds, in first-seen order."""
    if "source" not in metrics.columns:
        return []
    poisoned = metrics[metrics["source"] != CLEAN]
    pairs = poisoned[["source", "target"]].drop_duplicates()
    return [(int(s), int(t)) for s, t in pairs.to_numpy()]


def is_matrix(metrics: pd.DataFrame) -> bool:
    return len(pairs_of(metrics)) > 1


def pair_slice(metrics: pd.DataFrame, source: int, target: int) -> pd.DataFrame:
    """One pair's replicas plus the shared clean ones: a plain sweep's table."""
    keep = ((metrics["source"] == source) & (metrics["target"] == target)) | (
        metrics["source"] == CLEAN
    )
    return metrics[keep]


def summarize_pairs(metrics: pd.DataFrame, **kwargs) -> pd.DataFrame:
    """`summarize(pair_slice)` for every pair, with `source`/`target` columns first.

    A table without `source` (written before the matrix existed) is one pair,
    summarized whole; its source/target columns are then left out.
    """
    pairs = pairs_of(metrics)
    if not pairs:
        return summarize(metrics, **kwargs)
    frames = []
    for s, t in pairs:
        # Each pair's confirmatory classes are its own source and target.
        part = summarize(pair_slice(metrics, s, t), **{**kwargs, "classes": (s, t)})
        part.insert(0, "target", np.full(len(part), t, np.int16))
        part.insert(0, "source", np.full(len(part), s, np.int16))
        frames.append(part)
    return pd.concat(frames, ignore_index=True)

