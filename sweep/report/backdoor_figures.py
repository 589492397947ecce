"""A backdoor sweep's figures: ASR dose-response, clean-accuracy cost, stamped
examples. Pure: tables and images in, a matplotlib Figure out.

BACKDOORBENCH holds the published reference points the dose-response shows
beside the sweep's own curve (a different model and schedule, one seed each).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sweep.report.figures import CLEAN_COLOR, POISONED_COLOR, _figure

# BackdoorBench (Wu et al., NeurIPS 2022 Datasets and Benchmarks), public results
# table: BadNets on CIFAR-10, PreAct-ResNet18, 3x3 white square, all-to-one
# into class 0, one seed per cell, no interval. Poisoned share (percent of the
# training set) -> attack success rate (percent).
BACKDOORBENCH = {
    "label": "BackdoorBench BadNets (PreAct-ResNet18, CIFAR-10, its schedule; "
             "1 seed each)",
    "share": (0.1, 0.5, 1.0, 5.0, 10.0),
    "asr": (1.23, 50.06, 74.73, 88.74, 95.03),
    "clean_accuracy": (93.61, 91.32),  # clean model -> 10% poisoned
}


def figure_asr_dose_response(
    table: pd.DataFrame,
    per_seed: pd.DataFrame,
    *,
    n_train: int,
    level: float,
    thresholds: pd.DataFrame | None = None,
    reference: dict | None = BACKDOORBENCH,
) -> Figure:
    """Mean ASR against the poisoned share with its pointwise band.

    Args:
      table: `stats.asr_by_count` rows (count, asr_mean, asr_low, asr_high).
      per_seed: count, asr of every usable replica (dots).
      n_train: training images (share = count / n_train).
      level: the intervals' level (caption only).
      thresholds: `stats.threshold_table` rows: a dashed line at each X and
        its set's hull on the axis.
      reference: published points drawn as labelled markers, or None.
    """
    figure = _figure(7.5, 4.6)
    ax = figure.add_subplot()
    share = 100 * table["count"].to_numpy(float) / n_train
    # The clean twins (share 0) sit at the left edge of a log axis.
    positive = share[share > 0]
    smallest = [*positive, *(reference["share"] if reference is not None else ())]
    left = min(smallest) / 3 if smallest else 0.01
    x = np.where(share > 0, share, left)
    low, high = table["asr_low"].to_numpy(float), table["asr_high"].to_numpy(float)
    ok = np.isfinite(low)
    ax.fill_between(x[ok], low[ok], high[ok], color=POISONED_COLOR, alpha=0.18,
                    label=f"{level:.0%} interval of the mean (pointwise)")
    ax.plot(x, table["asr_mean"], "o-", color=POISONED_COLOR,
            label="this sweep: mean ASR over seeds")
    seed_x = 100 * per_seed["count"].to_numpy(float) / n_train
    seed_x = np.where(seed_x > 0, seed_x, left)
    ax.scatter(seed_x, per_seed["asr"], s=9, color=CLEAN_COLOR, alpha=0.7,
               label="one seed", zorder=3)
    if reference is not None:
        ax.plot(reference["share"], reference["asr"], "s--", color="black",
                markerfacecolor="white", label=reference["label"])
    if thresholds is not None:
        for r in thresholds.itertuples():
            ax.axhline(r.threshold, color="0.5", lw=0.8, ls=":")
            if math.isfinite(r.share_low) and r.share_high > 0:
                lo = max(r.share_low, left)
                hi = r.share_high if math.isfinite(r.share_high) else x.max() * 1.5
                ax.plot([lo, hi], [r.threshold, r.threshold], color="0.3", lw=3,
                        alpha=0.5, solid_capstyle="butt")
    ax.set_xscale("log")
    ticks = [left, *positive]
    ax.set_xticks(ticks, ["clean", *(f"{s:g}%" for s in positive)])
    ax.minorticks_off()
    ax.set_ylim(-2, 102)
    ax.set_xlabel("poisoned share of the training set")
    ax.set_ylabel("attack success rate, %")
    ax.legend(fontsize=7, loc="upper left")
    return figure


def figure_clean_cost(table: pd.DataFrame, *, n_train: int, level: float) -> Figure:
    """The clean-accuracy cost per poisoned count: mean paired delta with its
    interval (points, poisoned minus clean twin)."""
    rows = table[table["count"] > 0]
    figure = _figure(6.0, 3.2)
    ax = figure.add_subplot()
    x = np.arange(len(rows))
    mean = rows["cost_mean"].to_numpy(float)
    low, high = rows["cost_low"].to_numpy(float), rows["cost_high"].to_numpy(float)
    err = np.vstack([mean - low, high - mean])
    err = np.where(np.isfinite(err), err, 0.0)
    ax.errorbar(x, mean, yerr=err, fmt="o", color=POISONED_COLOR, capsize=4)
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set_xticks(x, [f"{c}\n({100 * c / n_train:g}%)" for c in rows["count"]])
    ax.set_xlabel("poisoned images (share)")
    ax.set_ylabel("clean accuracy change, points")
    ax.set_title(f"clean-accuracy cost vs the clean twin (paired, {level:.0%} t "
                 "interval)", fontsize=9)
    return figure


def figure_stamped_examples(
    clean: np.ndarray,
    stamped: np.ndarray,
    old: np.ndarray,
    new: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str,
) -> Figure:
    """Poisoned training images: the clean original above, stamped below.

    Args:
      clean, stamped: (n, H, W, C) uint8.
      old, new: (n,) labels before and after poisoning.
    """
    n = len(clean)
    figure = _figure(1.3 * max(n, 2), 3.3)
    axes = figure.subplots(2, max(n, 2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        axes[0, i].imshow(clean[i], interpolation="nearest")
        axes[0, i].set_title(f"{class_names[old[i]]}", fontsize=7)
        axes[1, i].imshow(stamped[i], interpolation="nearest")
        axes[1, i].set_title(f"-> {class_names[new[i]]}", fontsize=7)
    figure.suptitle(title, fontsize=9)
    return figure
