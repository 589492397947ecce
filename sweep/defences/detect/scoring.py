"""Grading suspicion scores against the known poisoned set.

Pure NumPy: a score per image (higher = more suspect), a boolean truth (was it
flipped) and optionally the detector's own flags. Average precision and AUROC
follow scikit-learn's definitions (tests hold them to it) so numbers compare
with the literature; intervals over seeds come from `sweep.stats`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sweep import stats

METRICS = ("precision_at_k", "recall_at_k", "precision_flag", "recall_flag",
           "n_flagged", "average_precision", "auroc")


def _check(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, float)
    truth = np.asarray(truth, bool)
    if scores.shape != truth.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and truth {truth.shape} must be (N,)")
    return scores, truth


def precision_recall_at_k(scores, truth, k: int) -> tuple[float, float]:
    """Precision and recall of the k most suspect images.

    Scores tie (deep k-NN's are shares of k neighbours), and breaking ties by
    position would favour whichever classes come first in the data; the value
    is the expectation over a random order within the tie at the k-th score.
    """
    scores, truth = _check(scores, truth)
    if k <= 0:
        return math.nan, math.nan
    k = min(k, len(scores))
    kth = np.sort(scores)[::-1][k - 1]
    above, tie = scores > kth, scores == kth
    hits = truth[above].sum() + (k - above.sum()) * truth[tie].sum() / tie.sum()
    n_pos = truth.sum()
    return float(hits / k), float(hits / n_pos) if n_pos else math.nan


def precision_recall_flags(flags, truth) -> tuple[float, float]:
    """Precision and recall of a detector's own flagged set (NaN when undefined)."""
    flags, truth = np.asarray(flags, bool), np.asarray(truth, bool)
    n_flag, n_pos = flags.sum(), truth.sum()
    hits = (flags & truth).sum()
    return (float(hits / n_flag) if n_flag else math.nan,
            float(hits / n_pos) if n_pos else math.nan)


def average_precision(scores, truth) -> float:
    """Area under the precision-recall steps, sum_n (R_n - R_{n-1}) P_n over
    distinct thresholds (scikit-learn's `average_precision_score`)."""
    scores, truth = _check(scores, truth)
    if not truth.any():
        return math.nan
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], truth[order]
    # Last position of each distinct score: ties enter the ranking together.
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    tp = np.cumsum(t)[last]
    precision = tp / (last + 1)
    recall = tp / truth.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def auroc(scores, truth) -> float:
    """P(score of a flipped image > score of a clean one), ties counting half."""
    scores, truth = _check(scores, truth)
    n_pos, n_neg = truth.sum(), (~truth).sum()
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    u = ranks[truth].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def pr_curve(scores, truth) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at every distinct threshold, most suspect first."""
    scores, truth = _check(scores, truth)
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    tp = np.cumsum(t)[last]
    return tp / max(truth.sum(), 1), tp / (last + 1)


def grade(scores, truth, flags, *, k: int) -> dict:
    """Every metric of one detector on one (count, seed)."""
    p_k, r_k = precision_recall_at_k(scores, truth, k)
    p_f, r_f = precision_recall_flags(flags, truth)
    return {"precision_at_k": p_k, "recall_at_k": r_k, "precision_flag": p_f,
            "recall_flag": r_f, "n_flagged": int(np.sum(flags)),
            "average_precision": average_precision(scores, truth),
            "auroc": auroc(scores, truth)}


def summarize(per_seed: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
    """Mean and t interval over seeds of every metric, per count x detector.

    Args:
      per_seed: one row per count x detector x seed with METRICS columns.
    Returns:
      count, detector, metric, n_seeds, mean, ci_low, ci_high, level (tidy).
    """
    rows = []
    for (count, detector), g in per_seed.groupby(["count", "detector"], sort=True):
        for metric in METRICS:
            x = g[metric].to_numpy(float)
            x = x[np.isfinite(x)]
            mean, (low, high) = stats.t_interval(x, level=level)
            # Proportions live in [0, 1], counts in [0, inf): clipping the
            # interval to the parameter space never lowers its coverage.
            upper = math.inf if metric == "n_flagged" else 1.0
            low, high = max(low, 0.0), min(high, upper)
            rows.append({"count": int(count), "detector": detector, "metric": metric,
                         "n_seeds": int(x.size), "mean": mean, "ci_low": low,
                         "ci_high": high, "level": level})
    return pd.DataFrame(rows)
