"""The report: figures, report.md and a self-contained report.html beside the results.

`write_report` reads a finished results folder, recomputes every statistic
(`sweep.stats`, fixed generator so the report is reproducible), rewrites
summary.parquet, draws the PNG figures with matplotlib's Agg canvas and writes
report.md (figures linked) and report.html (figures embedded as base64, so the
one file can be mailed). Figures that need the training images are skipped with
a note when the data cannot be loaded.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sweep import results as results_lib
from sweep import stats
from sweep.errors import SweepError

ALPHA = 0.05  # significance level the report's answers use
DPI = 100
FLIPPED_SHOWN = 24  # images in the flipped-image grid
THRESHOLD_DROP = 10.0  # default threshold: this many points below clean accuracy
REPORT_SEED = 0  # the report's resampling generator: same folder, same report
PAIRED_COLOR, CLEAN_COLOR, POISONED_COLOR = "#1f77b4", "#7f7f7f", "#d62728"


# What the text says, computed once.


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
    threshold_result: tuple[float, tuple[float, float]]
    threshold_text: str
    significant: dict  # class name -> (smallest count Holm, smallest count BH)
    moved: tuple[int, ...]  # class ids with BH-adjusted p < ALPHA at some count
    twin_corr: float  # median over rows
    width_ratio: float  # median over rows
    source_ratio: float  # source class at the largest count
    pooled_sd: float
    mde_median: float
    mde_source: float
    seeds_for_one_point: int | None
    min_p: float
    family: int


def _median(values: pd.Series) -> float:
    finite = values.to_numpy(dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite)) if finite.size else math.nan


def _diverged(metrics: pd.DataFrame, epoch: int) -> tuple[tuple[int, int], ...]:
    early = metrics[metrics["epoch"] <= epoch]
    flagged = early.groupby(["replica", "count", "seed"])["diverged"].any()
    rows = flagged[flagged].reset_index()
    return tuple(
        (int(c), int(s)) for c, s in zip(rows["count"], rows["seed"], strict=True)
    )


def facts_of(
    results: stats.Results,
    summary: pd.DataFrame,
    *,
    level: float,
    threshold: float | None,
    rng: np.random.Generator,
) -> Facts:
    """Everything the report text states about a sweep.

    Args:
      results: the loaded results folder.
      summary: its `stats.summarize` table.
      level: interval level.
      threshold: source accuracy (percent) for the threshold question, or None
        for THRESHOLD_DROP points below the clean source accuracy (half of it
        when that is under twice the drop).
      rng: resampling generator for the threshold interval.

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
    clean = clean[~clean["replica"].isin(_diverged_replicas(metrics, epoch))]
    given = threshold is not None
    if threshold is None:
        start = float(clean["accuracy"].mean()) if len(clean) else 0.0
        # A weak model's clean accuracy may sit near the drop: halve it instead.
        threshold = (
            float(round(start - THRESHOLD_DROP))
            if start > 2 * THRESHOLD_DROP
            else round(start / 2, 1)
        )
    answer = stats.threshold_count(
        metrics, class_id=source_id, threshold=threshold, level=level, rng=rng
    )
    counts = tuple(sorted(int(c) for c in summary["count"].unique()))
    usable = summary[(summary["class_id"] == source_id) & (summary["n_seeds"] > 0)]
    text = stats.describe_threshold(
        answer,
        threshold=threshold,
        class_name=name_of[source_id],
        largest_count=int(usable["count"].max()) if len(usable) else counts[-1],
        level=level,
    )
    moved = summary.groupby("class_id")["p_bh"].min()
    moved_ids = tuple(int(k) for k in moved[moved < ALPHA].index)
    significant = {
        name_of[k]: (
            stats.smallest_significant_count(summary, k, alpha=ALPHA, adjust="holm"),
            stats.smallest_significant_count(summary, k, alpha=ALPHA, adjust="bh"),
        )
        for k in dict.fromkeys((source_id, target_id, *moved_ids))
    }
    top = summary[(summary["count"] == counts[-1]) & (summary["class_id"] == source_id)]
    sd = stats.pooled_delta_sd(summary)
    n_seeds = int(summary["n_seeds"].max())
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
        significant=significant,
        moved=moved_ids,
        twin_corr=_median(summary["twin_corr"]),
        width_ratio=_median(summary["width_ratio"]),
        source_ratio=float(top["width_ratio"].iloc[0]) if len(top) else math.nan,
        pooled_sd=sd,
        mde_median=_median(summary["mde"]),
        mde_source=float(top["mde"].iloc[0]) if len(top) else math.nan,
        seeds_for_one_point=(
            stats.seeds_needed(1.0, sd) if np.isfinite(sd) and sd > 0 else None
        ),
        min_p=stats.min_attainable_p(n_seeds) if paired else math.nan,
        family=int(summary["p_value"].notna().sum()),
    )


def _most_moved(summary: pd.DataFrame, *, lowest: bool) -> int:
    """Old manifests without source/target ids: the class that moved most."""
    top = summary[summary["count"] == summary["count"].max()]
    row = top.loc[top["delta_mean"].idxmin() if lowest else top["delta_mean"].idxmax()]
    return int(row["class_id"])


def _diverged_replicas(metrics: pd.DataFrame, epoch: int) -> set[int]:
    early = metrics[metrics["epoch"] <= epoch]
    flagged = early.groupby("replica")["diverged"].any()
    return set(flagged[flagged].index.tolist())


# The training set, for the figures that need images or label counts.


@dataclass(frozen=True)
class TrainingSet:
    """The training images and clean labels the sweep trained on."""

    images: np.ndarray  # (N_full, H, W, C) uint8, the whole loaded split
    rows: np.ndarray  # (N,) row in `images` of each training example
    labels: np.ndarray  # (N,) clean labels of the training examples


def load_training_set(
    manifest: dict, poisoned: pd.DataFrame | None
) -> tuple[TrainingSet | None, str | None]:
    """Load the sweep's training set via sweep.data, checked against the manifest.

    Returns:
      (training set, None), or (None, one line saying why it is unavailable).
    """
    from sweep import data as data_lib

    config = manifest.get("config", {})
    spec = config.get("data")
    recorded = (
        manifest.get("data", {}).get("source")
        if isinstance(manifest.get("data"), dict)
        else None
    )
    if spec is None and recorded and (recorded == "sample" or Path(recorded).exists()):
        spec = recorded
    if spec is None and not os.environ.get("SWEEP_DATA"):
        # load(None) would download CIFAR-10: not something a report should do.
        return None, "the sweep recorded no data location and $SWEEP_DATA is unset"
    try:
        ds = data_lib.load(spec)
    except Exception as error:  # any loader failure only costs these figures
        return None, f"the training data could not be loaded ({_one_line(error)})"
    expected = manifest.get("data_hash")
    if expected and ds.content_hash != expected:
        return None, f"the data at {spec} is not what the sweep trained on (hash)"
    rows = np.arange(len(ds.train_labels))
    if config.get("train_size") is not None:
        rows = data_lib.balanced_subset(
            ds.train_labels,
            int(config["train_size"]),
            seed=int(config.get("subset_seed", 0)),
        )
    labels = np.asarray(ds.train_labels)[rows]
    if poisoned is not None and len(poisoned):
        index = poisoned["index"].to_numpy(dtype=np.int64)
        if (
            index.max() >= len(rows)
            or (labels[index] != poisoned["old_label"].to_numpy()).any()
        ):
            return None, "poisoned.parquet does not match the loaded training labels"
    return TrainingSet(images=ds.train_images, rows=rows, labels=labels), None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


# Figures: each takes tables and returns a Figure (no pyplot state).


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


def _has(values) -> bool:
    return bool(np.isfinite(np.asarray(values, dtype=float)).all())


def figure_dose_response(
    curves: dict[str, pd.DataFrame],
    summary: pd.DataFrame,
    *,
    level: float,
    threshold_curve: pd.DataFrame | None = None,
    threshold: float | None = None,
    answer: tuple[float, tuple[float, float]] | None = None,
    source: str = "",
) -> Figure:
    """Delta vs count per class: means with t intervals, isotonic fit, seed band.

    Args:
      curves: class name -> `stats.dose_response` table.
      summary: `stats.summarize` table (for the t intervals).
      level: interval level (labels only).
      threshold_curve: `dose_response(absolute=True)` of the source, drawn in a
        last panel with the threshold line, or None.
      threshold: the threshold (percent).
      answer: `stats.threshold_count` result, marked where finite.
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
                label=f"{level:.0%} seed-bootstrap band",
            )
        ax.plot(counts, curve["fit"], color=PAIRED_COLOR, label="isotonic fit")
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
                counts,
                threshold_curve["band_low"],
                threshold_curve["band_high"],
                color=POISONED_COLOR,
                alpha=0.2,
                lw=0,
            )
        ax.plot(counts, threshold_curve["fit"], color=POISONED_COLOR, label="fit")
        ax.plot(counts, threshold_curve["accuracy_mean"], "o", color="black")
        if threshold is not None:
            ax.axhline(threshold, color="black", ls="--", lw=1, label="threshold")
        if answer is not None and np.isfinite(answer[0]):
            point, (low, high) = answer
            ax.axvline(point, color="black", lw=1, label=f"crossing {point:.1f}")
            if np.isfinite(low):
                right = high if np.isfinite(high) else counts[-1] * 1.3
                ax.axvspan(low, right, color="black", alpha=0.08, lw=0)
        _symlog(ax, counts)
        ax.set_title(f"{source} accuracy (threshold question)")
        ax.set_xlabel("flipped labels (count)")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7)
    return figure


def _confusion_means(
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
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    shades = np.linspace(0.0, 0.9, max(len(counts), 2))
    return {c: cmap(s) for c, s in zip(counts, shades, strict=False)}


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


# Rendering.


@dataclass(frozen=True)
class Block:
    """One piece of the report: kind in h1, h2, p, note, ul, img, table."""

    kind: str
    text: str = ""
    items: tuple[str, ...] = ()
    table: pd.DataFrame | None = field(default=None, compare=False)


def _markdown(blocks: Sequence[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.text}")
        elif b.kind == "h2":
            out.append(f"## {b.text}")
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "note":
            out.append(f"> **{b.text}**")
        elif b.kind == "ul":
            out.append("\n".join(f"- {item}" for item in b.items))
        elif b.kind == "img":
            out.append(f"![{b.items[0]}]({b.text})\n\n*{b.items[0]}*")
        elif b.kind == "table":
            out.append(_markdown_table(b.table))
    return "\n\n".join(out) + "\n"


def _markdown_table(table: pd.DataFrame) -> str:
    cells = table.astype(str)
    lines = [
        "| " + " | ".join(cells.columns) + " |",
        "| " + " | ".join("---" for _ in cells.columns) + " |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines)


_CSS = """
body { font-family: sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
.note { background: #fff3cd; border: 1px solid #e0b000; padding: 0.6em; }
table { border-collapse: collapse; font-size: 0.85em; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
img { max-width: 100%; }
figcaption { font-style: italic; margin-bottom: 1.5em; }
"""


def _html(blocks: Sequence[Block], pngs: dict[str, bytes], title: str) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
    ]
    for b in blocks:
        if b.kind in ("h1", "h2"):
            out.append(f"<{b.kind}>{e(b.text)}</{b.kind}>")
        elif b.kind == "p":
            out.append(f"<p>{e(b.text)}</p>")
        elif b.kind == "note":
            out.append(f'<p class="note"><strong>{e(b.text)}</strong></p>')
        elif b.kind == "ul":
            out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "img":
            data = base64.b64encode(pngs[b.text]).decode("ascii")
            out.append(
                f'<figure><img alt="{e(b.items[0])}" '
                f'src="data:image/png;base64,{data}">'
                f"<figcaption>{e(b.items[0])}</figcaption></figure>"
            )
        elif b.kind == "table":
            out.append(b.table.to_html(index=False, border=0, na_rep="-"))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _fmt(x: float, digits: int = 2) -> str:
    return "-" if not np.isfinite(x) else f"{x:.{digits}f}"


def _interval(low: float, high: float) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "-"
    return f"[{low:+.2f}, {high:+.2f}]"


def key_table(summary: pd.DataFrame, class_ids: Sequence[int]) -> pd.DataFrame:
    """The summary rows of some classes, formatted for reading."""
    rows = summary[summary["class_id"].isin(list(class_ids))]
    rows = rows.sort_values(["class_id", "count"])
    return pd.DataFrame(
        {
            "class": rows["class_name"],
            "count": rows["count"],
            "seeds": rows["n_seeds"],
            "delta": [f"{d:+.2f}" for d in rows["delta_mean"]],
            "t interval": [
                _interval(a, b) for a, b in zip(rows["ci_low"], rows["ci_high"])
            ],
            "bootstrap": [
                _interval(a, b) for a, b in zip(rows["boot_low"], rows["boot_high"])
            ],
            "p": [_fmt(p, 4) for p in rows["p_value"]],
            "p Holm": [_fmt(p, 4) for p in rows["p_holm"]],
            "p BH": [_fmt(p, 4) for p in rows["p_bh"]],
            "twin r": [_fmt(r) for r in rows["twin_corr"]],
            "width ratio": [_fmt(r) for r in rows["width_ratio"]],
            "MDE": [_fmt(m) for m in rows["mde"]],
        }
    )


def _text(facts: Facts, summary: pd.DataFrame) -> list[Block]:
    """The report's words, before the figures."""
    f = facts
    blocks = [
        Block("h1", f"Label-flip poisoning: {f.source} -> {f.target} ({f.title})")
    ]
    if f.seeds_note:
        blocks.append(
            Block(
                "note",
                f"{f.seeds_note[0].upper()}{f.seeds_note[1:]}: intervals and p-values "
                "cannot be computed where they are missing; the figures show point "
                "estimates only.",
            )
        )
    design = (
        "paired: each poisoned replica shares its initial weights, data order and "
        "dropout with the clean replica of the same seed, so deltas are "
        "poisoned-minus-clean differences within a seed"
        if f.paired
        else "unpaired: every replica has its own seed, so deltas are differences "
        "of group means (Welch)"
    )
    diverged = (
        "none"
        if not f.diverged
        else f"{len(f.diverged)} left out (count, seed): "
        + ", ".join(f"({c}, {s})" for c, s in f.diverged)
    )
    blocks += [
        Block("h2", "Design"),
        Block(
            "ul",
            items=(
                f"Design: {design}.",
                f"Strategy: {f.strategy}; source {f.source}, target {f.target}.",
                (
                    f"Seeds: {len(f.seeds)} ({', '.join(map(str, f.seeds))})."
                    if f.paired
                    else f"Replicas: {f.per_count} per count, each with its own seed."
                ),
                f"Poisoned counts: {', '.join(map(str, f.counts))} (plus clean, 0).",
                f"Epoch analysed: {f.epoch} of {f.epochs} (the last).",
                f"Diverged replicas: {diverged}.",
                f"Intervals: {f.level:.0%} t ("
                + ("paired t" if f.paired else "Welch")
                + ") and bootstrap (BCa where defined, else percentile; method per "
                "row in summary.parquet).",
                "p-values: "
                + (
                    "exact sign-flip permutation test over all 2^n sign patterns "
                    f"(Monte Carlo above {stats.MAX_EXACT_SEEDS} seeds)"
                    if f.paired
                    else "label permutation test (exact when feasible)"
                )
                + f"; adjusted across the whole family of {f.family} count x class "
                "rows by Holm (family-wise error) and Benjamini-Hochberg (false "
                "discovery rate).",
            ),
        ),
        Block("h2", "Answers"),
    ]
    source_counts = f.significant.get(f.source, (None, None))
    target_counts = f.significant.get(f.target, (None, None))

    def first(pair: tuple[int | None, int | None]) -> str:
        holm, bh = (("none" if c is None else str(c)) for c in pair)
        return f"{holm} (Holm), {bh} (Benjamini-Hochberg)"

    how = "given"
    if not f.threshold_given:
        how = (
            f"no --threshold given: {THRESHOLD_DROP:g} points below clean accuracy, "
            f"or half of it when that is under {2 * THRESHOLD_DROP:g}%"
        )
    answers = [
        f"Threshold ({how}): {f.threshold_text}",
        f"Smallest count with a significant effect at alpha {ALPHA:g} on "
        f"{f.source}: {first(source_counts)}; on {f.target}: {first(target_counts)}.",
    ]
    others = [
        name
        for k, name in ((k, _name(summary, k)) for k in f.moved)
        if k not in (f.source_id, f.target_id)
    ]
    answers.append(
        "Other classes that moved (BH-adjusted p < "
        f"{ALPHA:g} at some count): {', '.join(others) if others else 'none'}."
    )
    if f.paired and np.isfinite(f.width_ratio):
        answers.append(
            f"Pairing: median twin correlation r = {_fmt(f.twin_corr)}; the paired "
            f"interval is {f.width_ratio:.2f} x the Welch interval on the same "
            f"numbers (median over rows; {f.source} at count {f.counts[-1]}: "
            f"{_fmt(f.source_ratio)}), "
            + (
                f"i.e. pairing is worth about {1 / f.width_ratio**2:.1f} x as many "
                "seeds."
                if f.width_ratio < 1
                else "i.e. pairing did not narrow the intervals here."
            )
        )
    elif f.paired:
        answers.append("Pairing benefit: not measurable with fewer than 3 seeds.")
    else:
        answers.append("Pairing: this sweep is unpaired, so nothing to compare.")
    if np.isfinite(f.mde_median):
        answers.append(
            f"Power: with these seeds the smallest delta detectable at alpha "
            f"{stats.POWER_ALPHA:g} with power {stats.POWER_TARGET:.0%} "
            f"({'paired' if f.paired else 'Welch'} t) is {f.mde_median:.2f} points "
            f"(median over rows; {f.source} at count "
            f"{f.counts[-1]}: {_fmt(f.mde_source)}). Pooled delta sd "
            f"{f.pooled_sd:.2f} points: detecting 1 point would need "
            f"{f.seeds_for_one_point} seeds."
        )
    else:
        answers.append("Power: cannot be estimated with fewer than 2 seeds.")
    if f.paired and np.isfinite(f.min_p) and f.family:
        answers.append(
            f"Resolution: with {f.per_count} seeds the exact sign-flip test "
            f"cannot give p below {f.min_p:.4f}, so over {f.family} rows Holm "
            f"cannot go below {min(1.0, f.min_p * f.family):.3f} and BH not below "
            f"{f.min_p:.4f}; more seeds, not larger effects, lower these floors."
        )
    blocks.append(Block("ul", items=tuple(answers)))
    return blocks


def _name(summary: pd.DataFrame, class_id: int) -> str:
    return str(summary.loc[summary["class_id"] == class_id, "class_name"].iloc[0])


def write_report(
    results_dir: str | os.PathLike,
    *,
    level: float = 0.95,
    threshold: float | None = None,
    on_facts: Callable[[Facts], None] | None = None,
) -> Path:
    """Write report.md, report.html, the PNG figures and summary.parquet.

    Args:
      results_dir: a finished sweep's results folder (written into).
      level: confidence level of every interval.
      threshold: source accuracy (percent) for the threshold question; None
        uses THRESHOLD_DROP points below the clean source accuracy.
      on_facts: called with the report's numbers once it is written (the CLI
        prints the headline answers from them).

    Returns:
      The path of report.html.
    """
    if not 0 < level < 1:
        raise SweepError(f"--level must be between 0 and 1 (e.g. 0.95), got {level}")
    if threshold is not None and not 0 <= threshold <= 100:
        raise SweepError(f"--threshold is a percent (0-100), got {threshold}")
    results = stats.load_results(results_dir)
    out = results.path
    metrics = results.metrics
    rng = np.random.default_rng(REPORT_SEED)
    summary = stats.summarize(metrics, level=level, rng=rng)
    if summary.empty:
        raise SweepError(f"{out} has no poisoned replicas: nothing to report")
    results_lib.write_parquet(summary, out / "summary.parquet")
    facts = facts_of(results, summary, level=level, threshold=threshold, rng=rng)
    class_names = tuple(
        summary.drop_duplicates("class_id").sort_values("class_id")["class_name"]
    )
    skip = _diverged_replicas(metrics, facts.epoch)
    blocks = _text(facts, summary)
    pngs: dict[str, bytes] = {}
    notes: list[str] = []

    def add(name: str, caption: str, draw: Callable[[], Figure]) -> None:
        pngs[name] = _png(draw())
        results_lib.atomic_write_bytes(out / name, pngs[name])
        blocks.append(Block("img", name, items=(caption,)))

    blocks.append(Block("h2", "Figures"))
    shown = dict.fromkeys((facts.source_id, facts.target_id, *facts.moved))
    curves = {
        class_names[k]: stats.dose_response(metrics, class_id=k, level=level, rng=rng)
        for k in shown
    }
    source_curve = stats.dose_response(
        metrics,
        class_id=facts.source_id,
        level=level,
        rng=rng,
        increasing=False,
        absolute=True,
    )
    add(
        "dose_response.png",
        f"Dose-response: accuracy change vs flipped labels (mean with {level:.0%} t "
        "interval, isotonic fit, seed-bootstrap band); last panel: "
        f"{facts.source} accuracy and the {facts.threshold:g}% threshold.",
        lambda: figure_dose_response(
            curves,
            summary,
            level=level,
            threshold_curve=source_curve,
            threshold=facts.threshold,
            answer=facts.threshold_result,
            source=facts.source,
        ),
    )
    groups = stats.accuracy_by_count(metrics, level=level)
    add(
        "class_accuracy.png",
        "The notebook's accuracy comparison, per class, clean vs poisoned at the "
        f"largest count ({facts.counts[-1]}), now with {level:.0%} t interval bars.",
        lambda: figure_class_accuracy(groups, count=facts.counts[-1], level=level),
    )
    if results.confusion is not None and len(results.confusion):
        means = _confusion_means(
            results.confusion, epoch=facts.epoch, skip=skip, k=len(class_names)
        )
        if 0 in means and len(means) > 1:
            add(
                "confusion.png",
                "Test confusion, row percent, mean over seeds: clean, poisoned at "
                "each count, and poisoned minus clean.",
                lambda: figure_confusion(means, class_names),
            )
    else:
        notes.append("confusion.parquet is missing: no confusion matrices.")
    add(
        "training_curves.png",
        f"Per-epoch train and test loss and accuracy per count (mean over seeds, "
        f"{level:.0%} t band).",
        lambda: figure_training_curves(
            training_curves(metrics, level=level, skip=skip), level=level
        ),
    )
    training, why = load_training_set(results.manifest, results.poisoned)
    if results.poisoned is None or not len(results.poisoned):
        notes.append("poisoned.parquet is missing: no label distribution or images.")
    elif training is None:
        notes.append(f"Label distribution and flipped images skipped: {why}.")
    else:
        table = class_distribution(training.labels, results.poisoned, len(class_names))
        add(
            "class_distribution.png",
            "Training labels per class before and after poisoning at each count.",
            lambda: figure_class_distribution(table, class_names),
        )
        largest = results.poisoned[results.poisoned["count"] == facts.counts[-1]]
        largest = largest[largest["seed"] == largest["seed"].min()]
        largest = largest.sort_values("index").head(FLIPPED_SHOWN)
        index = largest["index"].to_numpy(dtype=np.int64)
        add(
            "flipped_images.png",
            f"Flipped training images at count {facts.counts[-1]} (first "
            f"{len(index)} by index), old -> new label.",
            lambda: figure_flipped_images(
                training.images[training.rows[index]],
                largest["old_label"].to_numpy(),
                largest["new_label"].to_numpy(),
                class_names,
                title=f"flipped at count {facts.counts[-1]}",
            ),
        )
    if notes:
        blocks.append(Block("ul", items=tuple(notes)))
    blocks += [
        Block("h2", f"{facts.source} and {facts.target}"),
        Block(
            "p",
            "Deltas in percentage points (poisoned minus clean), intervals at "
            f"{level:.0%}; width ratio = paired t width / Welch width; MDE at alpha "
            f"{stats.POWER_ALPHA:g}, power {stats.POWER_TARGET:.0%}. Every statistic "
            "of every class is in summary.parquet.",
        ),
        Block("table", table=key_table(summary, [facts.source_id, facts.target_id])),
        Block("h2", "All classes"),
        Block("table", table=key_table(summary, sorted(summary["class_id"].unique()))),
    ]
    results_lib.atomic_write_bytes(out / "report.md", _markdown(blocks).encode())
    page = _html(blocks, pngs, facts.title)
    results_lib.atomic_write_bytes(out / "report.html", page.encode())
    if on_facts is not None:
        on_facts(facts)
    return out / "report.html"
