"""The detect run's report: tables, precision-recall curves, detection rate vs
count, and the top suspects as images. Reads only the results folder.

Figures are pure (tables in, Figure out); `write_detect_report` writes
detect.md, detect.html (self-contained) and the PNGs beside the tables.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from sweep import results
from sweep.defences.detect import detectors, scoring
from sweep.report.training_set import load_training_set

DPI = 110
LABELS = {"cleanlab": "confident learning (cleanlab)", "margin": "OOF margin",
          "aum": "area under the margin", "knn": "deep k-NN",
          "ensemble": "ensemble over seeds"}


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _ci(mean: float, low: float, high: float, digits: int = 2) -> str:
    if not math.isfinite(mean):
        return "n/a"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


STYLES = {"cleanlab": "-", "margin": "--", "aum": "-.", "knn": ":",
          "ensemble": (0, (5, 1, 1, 1))}  # identical curves stay distinguishable
MARKERS = {"cleanlab": "o", "margin": "s", "aum": "^", "knn": "D", "ensemble": "v"}


def _share(x: float) -> str:
    return f"{100 * x:.2g}%"


def figure_pr_curves(suspects: pd.DataFrame) -> Figure:
    """Precision-recall curves per count (> 0), one line per detector, averaged
    over seeds by interpolating precision at fixed recall.

    Chance (precision = the poison share) is drawn and labelled; when a share
    is under 10% (50 flips in 10,000 images: 0.5%) precision is on a log scale,
    where the chance line and curves near it stay visible.
    """
    counts = sorted(c for c in suspects["count"].unique() if c > 0)
    figure = _figure(4.2 * max(1, len(counts)), 3.6)
    axes = figure.subplots(1, max(1, len(counts)), squeeze=False)[0]
    grid = np.linspace(0, 1, 101)
    bases = {count: suspects[suspects["count"] == count].groupby("seed")[
        "poisoned"].mean().mean() for count in counts}
    log = bool(counts) and min(bases.values()) < 0.1
    for ax, count in zip(axes, counts):
        rows = suspects[suspects["count"] == count]
        base = bases[count]
        low = base / 2 if log else 0.0
        for det in detectors.DETECTORS:
            curves = []
            for _, g in rows.groupby("seed"):
                recall, precision = scoring.pr_curve(g[f"score_{det}"].to_numpy(),
                                                     g["poisoned"].to_numpy())
                # Interpolated precision: the best precision at recall >= r.
                best = np.maximum.accumulate(precision[::-1])[::-1]
                idx = np.searchsorted(recall, grid, side="left")
                curves.append(np.where(idx < len(best),
                                       best[np.minimum(idx, len(best) - 1)], 0.0))
                if det == "ensemble":
                    break  # identical for every seed
            ax.plot(grid, np.maximum(np.mean(curves, 0), low), label=LABELS[det],
                    lw=1.4, ls=STYLES[det])
        ax.axhline(base, color="grey", ls=":", lw=1.2)
        ax.annotate(f"chance = poison share {_share(base)}", xy=(0.98, base),
                    xycoords=("axes fraction", "data"), xytext=(0, 2),
                    textcoords="offset points", ha="right", va="bottom",
                    fontsize=7, color="dimgrey")
        ax.set(title=f"{count} flips", xlabel="recall", xlim=(0, 1),
               ylabel="precision" + (" (log scale)" if log else ""))
        if log:
            ax.set_yscale("log")
            ax.set_ylim(low, 1.15)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        else:
            ax.set_ylim(0, 1.02)
    axes[0].legend(fontsize=7, loc="lower left" if log else "best")
    figure.suptitle("Precision-recall per count (interpolated, mean over seeds)",
                    fontsize=9)
    return figure


def figure_detection_rate(detection: pd.DataFrame) -> Figure:
    """Recall at k = count vs count, per detector, with intervals over seeds
    (detectors nudged apart on the count axis so equal values stay visible)."""
    figure = _figure(5.5, 3.8)
    ax = figure.subplots()
    d = detection[detection["metric"] == "recall_at_k"]
    n = len(detectors.DETECTORS)
    for i, det in enumerate(detectors.DETECTORS):
        g = d[d["detector"] == det].sort_values("count")
        if g.empty:
            continue
        err = np.vstack([g["mean"] - g["ci_low"], g["ci_high"] - g["mean"]])
        err = np.clip(np.where(np.isfinite(err), err, 0.0), 0.0, None)
        nudge = 1.04 ** (i - (n - 1) / 2)
        ax.errorbar(g["count"] * nudge, g["mean"], yerr=err, marker=MARKERS[det],
                    ls=STYLES[det], capsize=3, label=LABELS[det])
    ax.set_xscale("log")
    counts = sorted(d["count"].unique())
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.minorticks_off()
    if counts:
        ax.set_xlim(counts[0] / 1.5, counts[-1] * 1.5)
    ax.set(xlabel="flipped labels (count)", ylabel="share of flips in the top-count",
           ylim=(0, 1.02), title="How many flips before the defence sees them")
    ax.legend(fontsize=7)
    return figure


def figure_suspects(images: np.ndarray, given, pred, truth, class_names, *,
                    title: str) -> Figure:
    """A grid of images titled 'given -> predicted', flips marked in red."""
    n = len(images)
    columns = min(8, max(1, n))
    rows = max(1, math.ceil(n / columns))
    figure = _figure(1.35 * columns, 1.5 * rows + 0.4)
    axes = figure.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if i < n:
            ax.imshow(images[i], interpolation="nearest")
            flipped = given[i] != truth[i]
            ax.set_title(f"{class_names[given[i]]} -> {class_names[pred[i]]}"
                         + (" *" if flipped else ""), fontsize=7,
                         color="red" if flipped else "black")
            if flipped:  # a red frame: the planted flips stand out in the grid
                for spine in ax.spines.values():
                    spine.set(visible=True, color="red", linewidth=2.5)
    figure.suptitle(title, fontsize=9)
    return figure


def top_suspects(suspects: pd.DataFrame, count: int, detector: str, n: int
                 ) -> pd.DataFrame:
    """The n images with the highest mean score over seeds at `count`; ties
    (deep k-NN's scores are shares of k) go to the lower out-of-fold
    probability of the given label, not to whichever class the data lists
    first."""
    rows = suspects[suspects["count"] == count]
    g = rows.groupby("index").agg(
        score=(f"score_{detector}", "mean"), given=("given_label", "first"),
        true=("true_label", "first"), pred=("ensemble_pred", "first"),
        row=("row", "first"), poisoned=("poisoned", "first"),
        p_given=("p_given", "mean"))
    g = g.sort_values(["score", "p_given"], ascending=[False, True], kind="stable")
    return g.head(n).reset_index()


def detection_table(detection: pd.DataFrame) -> pd.DataFrame:
    """count x detector rows, the headline metrics as 'mean [low, high]'."""
    shown = ("precision_at_k", "precision_flag", "recall_flag", "n_flagged",
             "average_precision", "auroc")
    rows = []
    for (count, det), g in detection.groupby(["count", "detector"], sort=True):
        g = g.set_index("metric")
        row = {"count": int(count), "detector": det,
               "seeds": int(g.loc["auroc", "n_seeds"])}
        for m in shown:
            r = g.loc[m]
            row[m] = _ci(r["mean"], r["ci_low"], r["ci_high"],
                         0 if m == "n_flagged" else 2)
        rows.append(row)
    order = {d: i for i, d in enumerate(detectors.DETECTORS)}
    df = pd.DataFrame(rows)
    return df.sort_values(["count", "detector"], key=lambda s: s.map(order)
                          if s.name == "detector" else s, ignore_index=True)


REPAIRS = {"remove": "retrained without the flagged images",
           "relabel": "retrained with the flagged images relabelled to their "
                      "out-of-fold predicted class"}


def repair_view(repair: pd.DataFrame, class_ids) -> pd.DataFrame:
    """count x repair x class rows (removal first), deltas as 'mean [low, high]'
    and what the flags hit (means over seeds). A table from before relabelling
    (no `method` column) is all removals."""
    r = repair[repair["class_id"].isin(class_ids)]
    if "method" not in r:
        r = r.assign(method="remove")
    order = {m: i for i, m in enumerate(REPAIRS)}
    r = r.assign(_m=r["method"].map(order)).sort_values(
        ["count", "_m", "class_id"], kind="stable")

    def cells(name):
        return [_ci(*v) for v in r[[name, f"{name}_low", f"{name}_high"]].values]

    view = pd.DataFrame({
        "count": r["count"], "repair": r["method"], "class": r["class_name"],
        "poisoned - clean": cells("poisoned_vs_clean"),
        "repaired - clean": cells("repaired_vs_clean"),
        "flagged": r["n_removed"].round(1),
        "flips caught": r["n_poison_removed"].round(1),
        "clean flagged": r["n_clean_removed"].round(1),
        "clean source flagged": r["n_clean_source_removed"].round(1),
    })
    if "n_poison_restored" in r:
        # Relabel rows only (NaN, shown "-", for removals).
        view["flips given true class"] = r["n_poison_restored"].round(1)
        view["clean relabelled"] = r["n_clean_relabelled"].round(1)
    return view.reset_index(drop=True)


def _repair_intro(repair: pd.DataFrame) -> str:
    det = repair["detector"].iloc[0]
    methods = (list(dict.fromkeys(repair["method"])) if "method" in repair
               else ["remove"])
    return (f"Repair of what {det} flags, per repair: "
            + "; ".join(f"{m}: {REPAIRS[m]}" for m in methods)
            + ". Same keys as the seed's clean and poisoned twins (paired). "
            "Accuracy change vs the clean twin, percentage points, mean over seeds "
            "[t interval]; the flagged counts are means over seeds (both repairs "
            "act on the same flags); 'clean relabelled' are clean images given "
            "another class.")


def clean_suspects_table(suspects: pd.DataFrame, class_names, n: int = 8
                         ) -> pd.DataFrame:
    """At count 0 (no planted flips): per detector, how many images it flags
    (mean over seeds) and its top suspects as 'row: given -> predicted'."""
    clean = suspects[suspects["count"] == 0]
    rows = []
    for det in detectors.DETECTORS:
        top = top_suspects(suspects, 0, det, n)
        flagged = clean.groupby("seed")[f"flag_{det}"].sum()
        rows.append({"detector": det, "flagged (mean over seeds)":
                     round(float(flagged.mean()), 1),
                     "top suspects (full-set row: given -> ensemble prediction)":
                     ", ".join(f"{r.row}: {class_names[r.given]} -> "
                               f"{class_names[r.pred]}" for r in top.itertuples())})
    return pd.DataFrame(rows)


def _meta(out: Path) -> dict:
    return json.loads((Path(out) / "detect.json").read_text())


def detection_lines(out) -> list[str]:
    out = Path(out)
    meta = _meta(out)
    level = int(round(100 * meta["config"]["level"]))
    table = detection_table(pd.read_parquet(out / "detection.parquet"))
    lines = [f"detection of the flipped labels, mean over seeds [{level}% t interval];"
             " precision at k = count equals recall at k = count; ensemble pools"
             " the seeds (one value, no interval)",
             table.to_string(index=False)]
    return lines


def clean_lines(out) -> list[str]:
    out = Path(out)
    meta = _meta(out)
    suspects = pd.read_parquet(out / "suspects.parquet")
    table = clean_suspects_table(suspects, meta["class_names"], n=5)
    lines = ["on the clean data (count 0, CIFAR-10's own labels):"]
    for r in table.itertuples(index=False):
        lines.append(f"  {r[0]:>9}: flags {r[1]:g}; top: {r[2]}")
    return lines


def repair_lines(out) -> list[str]:
    out = Path(out)
    path = out / "repair.parquet"
    if not path.exists():
        return ["no repair (--repair-with none)"]
    meta = _meta(out)
    repair = pd.read_parquet(path)
    view = repair_view(repair, [meta["source_id"], meta["target_id"]])
    return ["repair: " + _repair_intro(repair), view.to_string(index=False,
                                                                na_rep="-")]


def write_detect_report(out, *, n_top: int = 32) -> Path:
    """detect.md, detect.html and PNGs in `out`; returns the HTML path."""
    out = Path(out)
    meta = _meta(out)
    names = meta["class_names"]
    suspects = pd.read_parquet(out / "suspects.parquet")
    detection = pd.read_parquet(out / "detection.parquet")
    pngs: dict[str, bytes] = {}
    blocks: list[tuple[str, object]] = [("h1", "Detecting the flipped labels")]
    blocks.append(("p", f"{len(meta['seeds_list'])} seeds x "
                   f"{meta['config']['folds']} folds per count; counts "
                   f"{', '.join(map(str, meta['resolved_counts']))} on "
                   f"{meta['n_train']:,} training images. Every training image is "
                   "scored by models that never trained on it (out-of-fold), "
                   "except the area under the margin, which is a training "
                   "statistic by definition."))
    blocks.append(("table", detection_table(detection)))
    pngs["detect_pr.png"] = _png(figure_pr_curves(suspects))
    blocks.append(("img", "detect_pr.png", "Precision-recall per count"))
    if detection["count"].nunique() > 1:
        pngs["detect_rate.png"] = _png(figure_detection_rate(detection))
        blocks.append(("img", "detect_rate.png", "Detection rate vs count"))
    else:
        blocks.append(("p", "One poisoned count only: no detection-rate curve."))
    if (out / "repair.parquet").exists():
        repair = pd.read_parquet(out / "repair.parquet")
        blocks.append(("h2", f"Repair: {repair['detector'].iloc[0]}'s flags"))
        blocks.append(("p", _repair_intro(repair)))
        blocks.append(("table", repair_view(repair, [meta["source_id"],
                                                      meta["target_id"]])))
    training, why = load_training_set(
        results.read_manifest(out / "sweep"), None)
    blocks.append(("h2", "Top suspects"))
    blocks.append(("p", "On the clean data (count 0) nothing was flipped: what a "
                   "detector flags there is CIFAR-10's own label noise, ambiguous "
                   "images, or the detector's false alarms."))
    blocks.append(("table", clean_suspects_table(suspects, names)))
    if training is None:
        blocks.append(("p", f"No images: {why}."))
    else:
        for count in (0, max(meta["resolved_counts"])):
            top = top_suspects(suspects, count, "cleanlab", n_top)
            images = training.images[top["row"].to_numpy()]
            name = f"detect_suspects_{count}.png"
            title = (f"count {count}: top {len(top)} by confident learning "
                     "(given -> ensemble prediction; * = a planted flip)")
            pngs[name] = _png(figure_suspects(images, top["given"].to_numpy(),
                                              top["pred"].to_numpy(),
                                              top["true"].to_numpy(), names,
                                              title=title))
            blocks.append(("img", name, title))
            if count == 0:
                blocks.append(("p", "At count 0 every suspect carries its original "
                               "CIFAR-10 label: these are the detector's candidates "
                               "for CIFAR-10's own label noise (or hard images); "
                               "judge them by eye."))
    for name, data in pngs.items():
        results.atomic_write_bytes(out / name, data)
    results.atomic_write_bytes(out / "detect.md", _markdown(blocks).encode())
    path = out / "detect.html"
    results.atomic_write_bytes(path, _html(blocks, pngs).encode())
    return path


def _markdown(blocks) -> str:
    parts = []
    for b in blocks:
        if b[0] == "h1":
            parts.append(f"# {b[1]}")
        elif b[0] == "h2":
            parts.append(f"## {b[1]}")
        elif b[0] == "p":
            parts.append(b[1])
        elif b[0] == "img":
            parts.append(f"![{b[2]}]({b[1]})")
        elif b[0] == "table":
            t = b[1].astype(object).where(b[1].notna(), "-").astype(str)
            parts.append("\n".join(
                ["| " + " | ".join(t.columns) + " |",
                 "| " + " | ".join("---" for _ in t.columns) + " |"]
                + ["| " + " | ".join(r) + " |" for r in t.itertuples(index=False)]))
    return "\n\n".join(parts) + "\n"


def _html(blocks, pngs: dict[str, bytes]) -> str:
    e = html.escape
    parts = ['<!DOCTYPE html><html><head><meta charset="utf-8"><title>detect</title>'
             "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
             "table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid "
             "#ccc;padding:2px 6px}img{max-width:100%}</style></head><body>"]
    for b in blocks:
        if b[0] in ("h1", "h2"):
            parts.append(f"<{b[0]}>{e(b[1])}</{b[0]}>")
        elif b[0] == "p":
            parts.append(f"<p>{e(b[1])}</p>")
        elif b[0] == "img":
            data = base64.b64encode(pngs[b[1]]).decode("ascii")
            parts.append(f'<figure><img alt="{e(b[2])}" src="data:image/png;base64,'
                         f'{data}"><figcaption>{e(b[2])}</figcaption></figure>')
        elif b[0] == "table":
            parts.append(b[1].to_html(index=False, border=0, na_rep="-"))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
