"""The report's figures: pure functions, tables in, matplotlib `Figure` out.

No pyplot state: each figure has its own Agg canvas, so they draw in threads,
in notebooks (a `Figure` displays inline) and in the report alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
PAIRED_COLOR, CLEAN_COLOR, POISONED_COLOR = "#1f77b4", "#7f7f7f", "#d62728"


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _symlog(ax, counts: Sequence[int]) -> None:
    """Counts span 0 to hundreds: linear near 0, logarithmic above 1."""
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks(list(counts))
    ax.set_xticklabels([str(c) for c in counts])
    ax.set_xlim(-0.2, max(counts) * 1.3)


def _dense(counts: np.ndarray, *values: np.ndarray, per_segment: int = 64):
    """The curves linear between counts, as dense points in data space.

    On a symlog axis a straight segment between two counts is not the line
    (1 - w) v_j + w v_{j+1} the threshold answer interpolates; drawn densely,
    the curve on screen crosses a level where the answer says it does.
    """
    counts = np.asarray(counts, float)
    xs = np.concatenate([np.linspace(a, b, per_segment, endpoint=False)
                         for a, b in zip(counts[:-1], counts[1:], strict=True)]
                        + [counts[-1:]])
    return xs, *(np.interp(xs, counts, np.asarray(v, float)) for v in values)


def _has(values) -> bool:
    return bool(np.isfinite(np.asarray(values, dtype=float)).all())


def figure_dose_response(
    curves: dict[str, pd.DataFrame],
    summary: pd.DataFrame,
    *,
    level: float,
    threshold_curve: pd.DataFrame | None = None,
    threshold: float | None = None,
    answer: tuple[float, tuple] | None = None,
    source: str = "",
) -> Figure:
    """Delta vs count per class: means with pointwise t intervals, isotonic fit.

    Args:
      curves: class name -> `stats.dose_response` table.
      summary: `stats.summarize` table (for the t intervals).
      level: interval level (labels only).
      threshold_curve: `dose_response(absolute=True)` of the source, drawn in a
        last panel with the threshold line, or None.
      threshold: the threshold (percent).
      answer: `stats.threshold_set` (point, pieces) or `stats.threshold_count`
        (point, (low, high)) result, marked where finite.
      source: source class name.
    """
    panels = len(curves) + (threshold_curve is not None)
    figure = _figure(4.2 * panels, 3.6)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    for ax, (name, curve) in zip(axes, curves.items(), strict=False):
        rows = summary[summary["class_name"] == name].sort_values("count")
        counts = curve["count"].to_numpy()
        ax.axhline(0, color="black", lw=0.8)
        if _has(curve["band_low"]):
            ax.fill_between(
                counts,
                curve["band_low"],
                curve["band_high"],
                color=PAIRED_COLOR,
                alpha=0.2,
                lw=0,
                label=f"{level:.0%} t intervals, pointwise (joined for the eye)",
            )
        ax.plot(counts, curve["fit"], color=PAIRED_COLOR, label="isotonic fit (descriptive)")
        errors = None
        if _has(rows["ci_low"]):
            errors = np.vstack(
                [
                    rows["delta_mean"] - rows["ci_low"],
                    rows["ci_high"] - rows["delta_mean"],
                ]
            )
        ax.errorbar(
            rows["count"],
            rows["delta_mean"],
            yerr=errors,
            fmt="o",
            color="black",
            capsize=3,
            label=f"mean delta, {level:.0%} t interval"
            if errors is not None
            else "mean",
        )
        _symlog(ax, counts)
        ax.set_title(f"{name}")
        ax.set_xlabel("flipped labels (count)")
        ax.set_ylabel("accuracy change (points)")
    axes[0].legend(fontsize=7, loc="best")
    if threshold_curve is not None:
        ax = axes[-1]
        counts = threshold_curve["count"].to_numpy()
        if _has(threshold_curve["band_low"]):
            ax.fill_between(
                *_dense(counts, threshold_curve["band_low"],
                        threshold_curve["band_high"]),
                color=POISONED_COLOR,
                alpha=0.2,
                lw=0,
            )
        ax.plot(
            *_dense(counts, threshold_curve["accuracy_mean"]),
            color=POISONED_COLOR,
            label="mean (linear between counts)",
        )
        ax.plot(counts, threshold_curve["accuracy_mean"], "o", color="black")
        if threshold is not None:
            ax.axhline(threshold, color="black", ls="--", lw=1, label="threshold")
        if answer is not None and np.isfinite(answer[0]):
            point, spans = answer
            ax.axvline(point, color="black", lw=1, label=f"crossing {point:.1f}")
            exact = not spans or isinstance(spans[0], tuple)
            pieces = spans if exact else (spans,)
            label = f"{level:.0%} interval of the crossing"
            label += "" if exact else " (conservative)"
            for low, high in pieces:
                if not np.isfinite(low):
                    continue
                right = high if np.isfinite(high) else counts[-1] * 1.3
                ax.axvspan(low, right, color="black", alpha=0.08, lw=0, label=label)
                label = None
        _symlog(ax, counts)
        ax.set_title(f"{source} accuracy (threshold question)")
        ax.set_xlabel("flipped labels (count)")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7)
    return figure


def figure_confusion(
    means: dict[int, np.ndarray], class_names: Sequence[str]
) -> Figure:
    """Clean vs poisoned confusion (row percent) at each count, and the difference.

    Args:
      means: count -> (K, K) mean row-normalised confusion (true x predicted).
      class_names: (K,) names.
    """
    counts = sorted(c for c in means if c > 0)
    figure = _figure(3.0 * (len(counts) + 1) + 1, 6.4)
    axes = figure.subplots(2, len(counts) + 1, squeeze=False)
    short = [n[:5] for n in class_names]
    ticks = np.arange(len(class_names))
    spread = max([float(np.abs(means[c] - means[0]).max()) for c in counts] + [1e-9])

    def show(ax, matrix, title, *, diff):
        image = ax.imshow(
            matrix,
            cmap="RdBu_r" if diff else "Blues",
            vmin=-spread if diff else 0,
            vmax=spread if diff else 100,
        )
        ax.set_title(title, fontsize=9)
        ax.set_xticks(ticks, short, rotation=90, fontsize=6)
        ax.set_yticks(ticks, short, fontsize=6)
        return image

    clean = show(axes[0, 0], means[0], "clean (count 0)", diff=False)
    axes[0, 0].set_ylabel("true class")
    axes[1, 0].axis("off")
    axes[1, 0].text(
        0.5,
        0.5,
        "rows: true class\ncolumns: predicted\npercent of the row,\nmean over seeds",
        ha="center",
        va="center",
        fontsize=9,
        transform=axes[1, 0].transAxes,
    )
    difference = None
    for j, count in enumerate(counts, start=1):
        show(axes[0, j], means[count], f"poisoned, count {count}", diff=False)
        difference = show(
            axes[1, j],
            means[count] - means[0],
            f"poisoned - clean, count {count}",
            diff=True,
        )
        axes[1, j].set_xlabel("predicted class")
    figure.colorbar(clean, ax=axes[0, :], shrink=0.8, label="% of true class")
    if difference is not None:
        figure.colorbar(difference, ax=axes[1, :], shrink=0.8, label="points")
    return figure


def figure_class_distribution(
    table: pd.DataFrame, class_names: Sequence[str]
) -> Figure:
    """Training label counts before and after poisoning, and their change."""
    figure = _figure(11, 6.0)
    top, bottom = figure.subplots(2, 1)
    x = np.arange(len(class_names))
    counts = list(table.columns)
    width = 0.8 / len(counts)
    colors = _count_colors(counts)
    for j, count in enumerate(counts):
        label = "clean" if count == 0 else f"count {count}"
        offset = (j - (len(counts) - 1) / 2) * width
        top.bar(x + offset, table[count], width, color=colors[count], label=label)
        if count:
            change = table[count] - table[0]
            bottom.bar(x + offset, change, width, color=colors[count], label=label)
    top.set_xticks(x, class_names)
    top.set_ylabel("training images")
    top.set_title("training labels per class, clean and after poisoning")
    top.legend(fontsize=7, ncols=min(len(counts), 6))
    bottom.axhline(0, color="black", lw=0.8)
    bottom.set_xticks(x, class_names)
    bottom.set_ylabel("change (images)")
    bottom.set_title("change from clean")
    return figure


def _count_colors(counts: Sequence[int]) -> dict[int, tuple]:
    cmap = colormaps["viridis"]
    shades = np.linspace(0.0, 0.9, max(len(counts), 2))
    return {c: cmap(s) for c, s in zip(counts, shades, strict=False)}


def figure_training_curves(curves: pd.DataFrame, *, level: float) -> Figure:
    """Train and test loss and accuracy per epoch, one colour per count."""
    figure = _figure(11, 4.0)
    axes = figure.subplots(1, 2)
    counts = sorted(curves["count"].unique().tolist())
    colors = _count_colors(counts)
    for ax, kind in zip(axes, ("loss", "accuracy"), strict=True):
        for count in counts:
            for split, style in (("train", "-"), ("test", "--")):
                rows = curves[
                    (curves["count"] == count) & (curves["metric"] == f"{split}_{kind}")
                ].sort_values("epoch")
                label = f"{'clean' if count == 0 else f'count {count}'} {split}"
                ax.plot(
                    rows["epoch"],
                    rows["mean"],
                    style,
                    marker="o",
                    ms=3,
                    color=colors[count],
                    label=label,
                )
                if _has(rows["low"]):
                    ax.fill_between(
                        rows["epoch"],
                        rows["low"],
                        rows["high"],
                        color=colors[count],
                        alpha=0.15,
                        lw=0,
                    )
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)" if kind == "accuracy" else "loss")
        ax.set_title(
            f"{kind}: train (solid) and test (dashed), mean over seeds, "
            f"{level:.0%} band",
            fontsize=9,
        )
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[1].legend(fontsize=6, ncols=2)
    return figure


def figure_flipped_images(
    images: np.ndarray,
    old: np.ndarray,
    new: np.ndarray,
    class_names: Sequence[str],
    *,
    title: str,
) -> Figure:
    """A grid of flipped training images titled old -> new label.

    Args:
      images: (n, H, W, C) uint8.
      old, new: (n,) labels before and after poisoning.
    """
    n = len(images)
    columns = min(8, n)
    rows = math.ceil(n / columns)
    figure = _figure(1.3 * columns, 1.45 * rows + 0.4)
    axes = figure.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], interpolation="nearest")
            ax.set_title(f"{class_names[old[i]]} -> {class_names[new[i]]}", fontsize=7)
    figure.suptitle(title, fontsize=9)
    return figure


def figure_class_accuracy(groups: pd.DataFrame, *, count: int, level: float) -> Figure:
    """Per-class accuracy, clean vs poisoned at `count`, with t interval bars.

    Args:
      groups: `stats.accuracy_by_count` table.
      count: the poisoned count shown (the largest).
      level: interval level (label only).
    """
    figure = _figure(11, 4.0)
    ax = figure.subplots()
    clean = groups[groups["count"] == 0].sort_values("class_id")
    poisoned = groups[groups["count"] == count].sort_values("class_id")
    x = np.arange(len(clean))
    for rows, offset, color, label in (
        (clean, -0.2, CLEAN_COLOR, "clean"),
        (poisoned, 0.2, POISONED_COLOR, f"poisoned (count {count})"),
    ):
        errors = None
        if _has(rows["low"]):
            errors = np.vstack(
                [rows["mean"] - rows["low"], rows["high"] - rows["mean"]]
            )
        ax.bar(
            x + offset,
            rows["mean"],
            0.4,
            yerr=errors,
            capsize=3,
            color=color,
            label=label,
        )
    ax.set_xticks(x, clean["class_name"])
    ax.set_ylabel("test accuracy (%)")
    bars = f"{level:.0%} t intervals" if _has(clean["low"]) else "no intervals: 1 seed"
    ax.set_title(f"per-class test accuracy, mean over seeds ({bars})", fontsize=9)
    ax.legend(fontsize=8)
    ax.set_ylim(0, 100)
    return figure
