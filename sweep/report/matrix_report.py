"""The attack matrix's report: vulnerability heatmaps and the pairs ranked.

Reads a matrix sweep's metrics.parquet (see `sweep.stats.pair_tables`), summarizes each pair
with `sweep.stats.summarize`, and writes summary.parquet, matrix_source.png,
matrix_target.png, report.md and report.html. Figures are pure: a summary in,
a matplotlib Figure out.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sweep import results as results_lib
from sweep import stats
from sweep.errors import SweepError

REPORT_SEED = 0  # bootstrap and Monte Carlo draws of the report


def pair_cells(summary: pd.DataFrame, *, role: str) -> pd.DataFrame:
    """One row per pair x count: the `role` class's delta ("source" or "target").

    Returns columns source, target, count, delta_mean, ci_low, ci_high, n_seeds,
    p_adjusted (the confirmatory rule's adjusted p, within the pair: source and
    target are each pair's confirmatory classes; nothing is adjusted across pairs).
    """
    rows = summary[summary["class_id"] == summary[role]]
    cols = ["source", "target", "count", "delta_mean", "ci_low", "ci_high",
            "n_seeds", "p_adjusted"]
    return rows[cols].reset_index(drop=True)


def ranked_pairs(summary: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """Pairs at the largest count, most damaging first (source delta ascending)."""
    top = summary["count"].max()
    src = pair_cells(summary[summary["count"] == top], role="source")
    tgt = pair_cells(summary[summary["count"] == top], role="target")
    both = src.merge(tgt, on=["source", "target", "count"], suffixes=("", "_t"))
    both = both.sort_values(["delta_mean", "source", "target"], ignore_index=True)
    return pd.DataFrame({
        "rank": np.arange(1, len(both) + 1),
        "pair": [f"{class_names[s]} -> {class_names[t]}"
                 for s, t in zip(both["source"], both["target"])],
        "count": both["count"],
        "source delta": [_interval(m, lo, hi) for m, lo, hi in
                         zip(both["delta_mean"], both["ci_low"], both["ci_high"])],
        "target delta": [
            _interval(m, lo, hi) for m, lo, hi in
            zip(both["delta_mean_t"], both["ci_low_t"], both["ci_high_t"])],
        "seeds": both["n_seeds"],
        "p adjusted (within pair)": [_p(p) for p in both["p_adjusted"]],
    })


def figure_matrix(
    summary: pd.DataFrame, class_names: Sequence[str], *, role: str, level: float
) -> Figure:
    """K x K heatmap per count: the `role` class's mean delta, interval in each cell.

    Rows are sources, columns targets; pairs not in the sweep stay blank.
    """
    counts = sorted(int(c) for c in summary["count"].unique())
    k = len(class_names)
    cells = pair_cells(summary, role=role)
    lim = float(np.nanmax(np.abs(cells["delta_mean"].to_numpy(float)), initial=0.0))
    lim = lim if lim > 0 else 1.0
    side = max(3.5, 0.62 * k + 1.5)
    fig = Figure(figsize=(side * len(counts) + 1.0, side), layout="constrained")
    axes = fig.subplots(1, len(counts), squeeze=False)[0]
    image = None
    for ax, count in zip(axes, counts):
        grid = np.full((k, k), np.nan)
        here = cells[cells["count"] == count]
        for r in here.itertuples():
            grid[r.source, r.target] = r.delta_mean
        image = ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu", vmin=-lim,
                          vmax=lim)
        ax.set_facecolor("0.93")
        size = 7 if k > 6 else 9
        for r in here.itertuples():
            text = f"{r.delta_mean:+.1f}"
            if math.isfinite(r.ci_low):
                text += f"\n[{r.ci_low:+.1f},\n{r.ci_high:+.1f}]"
            dark = abs(r.delta_mean) > 0.6 * lim  # white on the deep colours
            ax.text(r.target, r.source, text, ha="center", va="center",
                    fontsize=size, color="white" if dark else "black")
        ax.set_xticks(range(k), class_names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), class_names, fontsize=8)
        ax.set_xlabel("target (flipped to)")
        ax.set_ylabel("source (flipped from)")
        ax.set_title(f"{count} flips")
    what = "source class" if role == "source" else "target class"
    fig.suptitle(f"{what} accuracy change vs clean twin (points; mean "
                 f"[{level:.0%} t interval])")
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="points")
    return fig


def write_matrix_report(results_dir: str | os.PathLike, *, level: float = 0.95) -> Path:
    """Write summary.parquet, the two heatmaps, report.md and report.html.

    Returns:
      The path of report.html.
    """
    out = Path(results_dir)
    manifest = results_lib.read_manifest(out)
    if manifest.get("status", "complete") != "complete":
        raise SweepError(f"sweep in {out} is not complete; let it finish or resume it")
    path = out / "metrics.parquet"
    if not path.is_file():
        raise SweepError(f"{out} has no metrics.parquet")
    metrics = pd.read_parquet(path)
    class_names = list(manifest["class_names"])
    rng = np.random.default_rng(REPORT_SEED)
    summary = stats.summarize_pairs(metrics, level=level,
                                     rng=rng)
    results_lib.write_parquet(summary, out / "summary.parquet")
    pngs = {}
    for role in ("source", "target"):
        buf = io.BytesIO()
        figure_matrix(summary, class_names, role=role, level=level).savefig(
            buf, format="png", dpi=110)
        pngs[f"matrix_{role}.png"] = buf.getvalue()
        results_lib.atomic_write_bytes(out / f"matrix_{role}.png", buf.getvalue())
    ranked = ranked_pairs(summary, class_names)
    n_seeds = int(summary["n_seeds"].max()) if len(summary) else 0
    notes = [
        f"{len(stats.pairs_of(metrics))} pairs, counts "
        f"{', '.join(map(str, sorted(summary['count'].unique())))}, {n_seeds} seeds; "
        "one clean replica per seed is every pair's twin.",
        "Each pair's source and target are its confirmatory classes: p adjusted "
        "is the fixed-sequence rule's (paired t tests, largest count first), "
        "familywise error controlled within each pair, not across the matrix.",
    ]
    if n_seeds < 2:
        notes.append("With one seed there are no intervals or p-values.")
    title = f"Attack matrix: {out.name}"
    md = [f"# {title}", "", *[f"- {n}" for n in notes], "",
          "## Pairs ranked by the source class's accuracy change at the largest count",
          "", _markdown_table(ranked), "",
          "![source delta](matrix_source.png)", "",
          "![target delta](matrix_target.png)", ""]
    results_lib.atomic_write_bytes(out / "report.md", "\n".join(md).encode())
    imgs = "".join(
        f'<p><img src="data:image/png;base64,{base64.b64encode(b).decode()}" '
        f'alt="{name}" style="max-width:100%"></p>' for name, b in pngs.items())
    page = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<h1>{html.escape(title)}</h1><ul>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"
            "<h2>Pairs ranked by the source class's accuracy change at the largest "
            "count</h2>" + ranked.to_html(index=False, escape=True) + imgs)
    results_lib.atomic_write_bytes(out / "report.html", page.encode())
    return out / "report.html"


def is_matrix_folder(out: str | os.PathLike) -> bool:
    try:
        return "pairs" in json.loads((Path(out) / "manifest.json").read_text())
    except (OSError, ValueError):
        return False


def _interval(mean: float, low: float, high: float) -> str:
    if not math.isfinite(low):
        return f"{mean:+.2f}"
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"


def _p(p: float) -> str:
    return "n/a" if not math.isfinite(p) else f"{p:.3g}"


def _markdown_table(table: pd.DataFrame) -> str:
    head = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.to_numpy()]
    return "\n".join([head, rule, *body])
