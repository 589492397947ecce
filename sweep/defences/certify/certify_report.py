"""The certify run's report: the price of the defence, certified accuracy
against radius, and the guarantee beside the measured attack. Reads only the
results folder.

Figures are pure (tables in, Figure out); `write_certify_report` writes
certify.md, certify.html (self-contained) and the PNGs beside the tables;
`console_lines` is what the command prints.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sweep import results
from sweep.report.rendering import Block, html_page, markdown, png_bytes

DPI = 100
LABELS = {"dpa": "DPA", "dpa-roe": "DPA+ROE", "fa": "FA", "fa-roe": "FA+ROE"}
COLORS = {"dpa": "#1f77b4", "dpa-roe": "#2ca02c", "fa": "#9467bd",
          "fa-roe": "#8c564b"}
UNDEFENDED, ENSEMBLE, CERTIFIED = "#d62728", "#1f77b4", "#2ca02c"
RADII_SHOWN = (0, 1, 2, 5, 10, 15, 20, 25, 50, 100)

# What the papers report on CIFAR-10, from their abstracts (the only part we
# could read here). Their setting differs from ours: see `published_note`.
PUBLISHED = (
    "DPA (Levine & Feizi, ICLR 2021): at least half of the CIFAR-10 test "
    "images certified against nine poisoned insertions (a median certified "
    "radius of 9; the abstract does not name the k) and, with semi-supervised "
    "base models (SS-DPA), against over 300 label flips.",
    "Finite Aggregation (Wang, Levine & Feizi, ICML 2022): up to 3.87 points "
    "more certified fraction than DPA on CIFAR-10 at the same clean accuracy.",
    "Run-Off Election (Rezaei et al., ICML 2023): up to 3-4 points more "
    "certified accuracy over DPA and FA; 12-27 points on a boosted DPA.",
)


def published_note(meta: dict) -> str:
    cfg = meta["config"]
    return (
        "Their base models are Network-in-Network CNNs trained for 200 epochs "
        "with SGD and random crops and flips, on all 50,000 CIFAR-10 training "
        "images (the authors' training scripts); ours are the reference "
        f"SimpleCNN (Adam, no augmentation) trained for "
        f"{cfg['base_epochs'] or cfg['sweep']['epochs']} epochs on "
        f"{meta['n_train']:,} images, so every partition holds "
        f"{50_000 / meta['n_train']:.1f}x fewer images than theirs at the same "
        "k. Their radii count insertions or deletions; a label flip touches one "
        "partition (the hash never sees the label), so the same radius covers "
        "that many flips.")


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _meta(out) -> dict:
    return json.loads((Path(out) / "certify.json").read_text())


def _ci(mean: float, low: float, high: float, digits: int = 1) -> str:
    if not math.isfinite(mean):
        return "-"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _class_order(meta: dict) -> list[int]:
    """Source first, then target, then the rest in class order; -1 (all) leads."""
    src, tgt = meta["source_id"], meta["target_id"]
    rest = [i for i in range(len(meta["class_names"])) if i not in (src, tgt)]
    return [-1, src, tgt, *rest]


def figure_certified(curves: pd.DataFrame, *, source: int, source_name: str,
                     single: float | None = None) -> Figure:
    """Certified accuracy against radius, one panel per k: every aggregation
    over all test images (solid) and the source class (dashed), shaded with
    the interval over seeds; a dotted line at the single model's clean
    accuracy (all images) when the sweep ran."""
    ks = sorted(curves["k"].unique())
    figure = _figure(max(6.5, 4.8 * len(ks)), 4.0)
    axes = figure.subplots(1, len(ks), squeeze=False)[0]
    for ax, k in zip(axes, ks):
        g = curves[curves["k"] == k]
        for method in LABELS:
            for class_id, style in ((-1, "-"), (source, "--")):
                c = g[(g["method"] == method) & (g["class_id"] == class_id)]
                if c.empty:
                    continue
                c = c.sort_values("radius")
                # Accuracy at r holds on [r, r + 1): the last step drawn too.
                x = np.r_[c["radius"].to_numpy(), c["radius"].max() + 1]
                y = np.r_[c["mean"].to_numpy(), c["mean"].iloc[-1]]
                label = f"{LABELS[method]}, {'all' if class_id < 0 else source_name}"
                ax.step(x, y, where="post", ls=style, color=COLORS[method],
                        label=label)
                if class_id < 0 and np.isfinite(c["ci_low"]).all():
                    ax.fill_between(x, np.r_[c["ci_low"], c["ci_low"].iloc[-1]],
                                    np.r_[c["ci_high"], c["ci_high"].iloc[-1]],
                                    step="post", color=COLORS[method], alpha=0.08)
        if single is not None:
            ax.axhline(single, color="grey", ls=":", lw=1.2,
                       label="one model on all data (clean)")
        top = g.loc[g["mean"] > 0, "radius"].max()
        ax.set(title=f"k = {k}", xlabel="certified radius (poisoned images)",
               ylabel="certified accuracy (%)", ylim=(0, 100),
               xlim=(0, (top if np.isfinite(top) else 0) + 2))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle("Certified accuracy against radius (mean over partition "
                    "seeds; shaded: interval, all images)", fontsize=9)
    return figure


def figure_attack(attack: pd.DataFrame, *, class_id: int, class_name: str) -> Figure:
    """The guarantee beside the attack, for one class: per k and aggregation,
    against the flip count, the undefended model's accuracy (the sweep), the
    ensemble's accuracy under the same flips, and the certified accuracy at
    radius = the number of flipped images; bars are intervals over seeds."""
    a = attack[attack["class_id"] == class_id]
    panels = list(a.groupby(["k", "d", "method"], sort=True).groups)
    figure = _figure(max(6.5, 4.6 * len(panels)), 3.9)
    axes = figure.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, (k, d, method) in zip(axes, panels):
        g = a[(a["k"] == k) & (a["d"] == d) & (a["method"] == method)]
        g = g.sort_values("count")
        x = np.arange(len(g))
        for name, color, label, nudge in (
                ("undefended", UNDEFENDED, "undefended model (sweep)", -0.08),
                ("ensemble", ENSEMBLE, "ensemble under the same flips", 0.0),
                ("certified", CERTIFIED, "certified at radius = flips (any "
                 "attack that size)", 0.08)):
            mean = g[f"{name}_mean"].to_numpy(float)
            if not np.isfinite(mean).any():
                continue
            err = np.vstack([mean - g[f"{name}_low"], g[f"{name}_high"] - mean])
            err = np.clip(np.where(np.isfinite(err), err, 0.0), 0.0, None)
            ax.errorbar(x + nudge, mean, yerr=err, marker="o", capsize=3,
                        color=color, label=label)
        ax.set_xticks(x, [str(c) for c in g["count"]])
        title = f"{LABELS[method]}, k = {k}" + (f", d = {d}" if d > 1 else "")
        ax.set(title=title, xlabel="flipped labels (count)",
               ylabel=f"{class_name} test accuracy (%)", ylim=(0, 100))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(f"{class_name}: measured attack and certified bound (mean "
                    "over seeds, bars: interval)", fontsize=9)
    return figure


def price_view(price: pd.DataFrame, meta: dict) -> pd.DataFrame:
    order = {c: i for i, c in enumerate(_class_order(meta))}
    p = price.assign(_o=price["class_id"].map(order)).sort_values(
        ["k", "d", "method", "_o"])
    return pd.DataFrame({
        "k": p["k"], "aggregation": p["method"].map(LABELS), "class": p["class_name"],
        "ensemble": [_ci(*r) for r in p[["ensemble_mean", "ensemble_low",
                                         "ensemble_high"]].values],
        "one base model": [_ci(*r) for r in p[["base_model_mean", "base_model_low",
                                               "base_model_high"]].values],
        "one model, all data": [_ci(*r) for r in p[["single_mean", "single_low",
                                                    "single_high"]].values],
        "price (points)": [_ci(*r) for r in p[["price_mean", "price_low",
                                               "price_high"]].values],
    }).reset_index(drop=True)


def certified_view(curves: pd.DataFrame, meta: dict, *, classes=None
                   ) -> pd.DataFrame:
    """Certified accuracy at a few radii: one row per k x aggregation x class."""
    top = int(curves["radius"].max())
    radii = [r for r in RADII_SHOWN if r <= top]
    order = _class_order(meta) if classes is None else classes
    rows = []
    for (k, d, method), g in curves.groupby(["k", "d", "method"], sort=True):
        for class_id in order:
            c = g[g["class_id"] == class_id].set_index("radius")
            if c.empty:
                continue
            row = {"k": k, "aggregation": LABELS[method],
                   "class": c["class_name"].iloc[0]}
            for r in radii:
                row[f"r={r}"] = _ci(c.loc[r, "mean"], c.loc[r, "ci_low"],
                                    c.loc[r, "ci_high"])
            rows.append(row)
    return pd.DataFrame(rows)


def attack_view(attack: pd.DataFrame, class_id: int) -> pd.DataFrame:
    a = attack[attack["class_id"] == class_id].sort_values(["k", "d", "method",
                                                            "count"])

    def cells(name):
        return [_ci(*r) for r in a[[f"{name}_mean", f"{name}_low",
                                    f"{name}_high"]].values]

    return pd.DataFrame({
        "k": a["k"], "aggregation": a["method"].map(LABELS), "count": a["count"],
        "undefended": cells("undefended"),
        "undefended change": cells("undefended_delta"),
        "ensemble": cells("ensemble"), "ensemble change": cells("ensemble_delta"),
        "certified at r = flips": cells("certified"),
        "bound holds": a["bound_holds"].map({True: "yes", False: "NO"}),
    }).reset_index(drop=True)


def retrain_view(ensembles: pd.DataFrame) -> pd.DataFrame:
    g = ensembles.groupby(["k", "d", "count"], sort=True).agg(
        models=("n_models", "first"), flipped=("n_flipped", "mean"),
        retrained=("n_retrained", "mean"), smallest=("smallest_partition", "min"),
        largest=("largest_partition", "max")).reset_index()
    g["retrained"] = g["retrained"].round(1)
    return g


def _tables(out: Path):
    return {name: pd.read_parquet(out / f"{name}.parquet") for name in
            ("certified", "attack", "price", "ensembles")}


def console_lines(out) -> list[str]:
    out = Path(out)
    meta = _meta(out)
    t = _tables(out)
    level = int(round(100 * meta["config"]["level"]))
    src = meta["source_id"]
    name = meta["class_names"][src]
    lines = [f"clean accuracy (%), mean over seeds [{level}% t interval]:",
             price_view(t["price"][t["price"]["class_id"].isin([-1, src])], meta)
             .to_string(index=False), "",
             "certified accuracy (%) at radius r (poisoned images):",
             certified_view(t["certified"], meta, classes=[-1, src])
             .to_string(index=False), "",
             f"{name} accuracy (%) under the sweep's flips:",
             attack_view(t["attack"], src).to_string(index=False)]
    return lines


def write_certify_report(out) -> Path:
    """certify.md, certify.html and PNGs in `out`; returns the HTML path."""
    out = Path(out)
    meta = _meta(out)
    t = _tables(out)
    cfg = meta["config"]
    names = meta["class_names"]
    src, tgt = meta["source_id"], meta["target_id"]
    level = int(round(100 * cfg["level"]))
    seeds = len(meta["seeds_list"])
    epochs = cfg["base_epochs"] or cfg["sweep"]["epochs"]
    pngs: dict[str, bytes] = {}
    blocks = [Block("h1", "Certified defence: partition aggregation")]
    blocks.append(Block("p", (
        f"{meta['n_train']:,} training images split by a salted hash of each "
        f"image's bytes into k = {', '.join(map(str, cfg['partitions']))} "
        f"partitions; one SimpleCNN base model per partition ({epochs} "
        f"epoch{'s' * (epochs != 1)}, "
        "the sweep's recipe), all trained together as engine replicas, each a "
        f"function of its own partition only. {seeds} seeds: each is a partition "
        "hash and the base models' keys. A test image's certified radius is the "
        "number of training images an attacker must insert, delete or relabel "
        "to change its prediction, minus one; a label flip counts one. Means "
        f"over seeds with {level}% t intervals; accuracies in percent.")))
    price = t["price"]
    single = price[(price["class_id"] == -1)]["single_mean"]
    blocks.append(Block("h2", "The price: clean accuracy"))
    blocks.append(Block("table", table=price_view(
        price[price["class_id"].isin([-1, src, tgt])], meta)))
    blocks.append(Block("p", "price = one model on all data minus the ensemble "
                        "(Welch interval: their seeds are independent)."))
    curves = t["certified"]
    pngs["certified.png"] = png_bytes(figure_certified(
        curves, source=src, source_name=names[src],
        single=float(single.iloc[0]) if len(single) and np.isfinite(
            single.iloc[0]) else None))
    blocks.append(Block("h2", "Certified accuracy against radius"))
    blocks.append(Block("img", "certified.png", ("Certified accuracy against "
                                                 "radius",)))
    blocks.append(Block("table", table=certified_view(curves, meta)))
    attack = t["attack"]
    blocks.append(Block("h2", f"The guarantee beside the attack: {names[src]}"))
    blocks.append(Block("p", (
        f"The sweep's flips ({names[src]} -> {names[tgt]}) applied to the "
        "partitioned training set: only the base models whose partition holds a "
        "flipped image are retrained, the rest are the clean ensemble's. "
        "'certified at r = flips' is the clean ensemble's certified accuracy at "
        "a radius equal to the number of flipped images: no attack of that size, "
        "on any images, can push the ensemble below it ('bound holds' checks it "
        "for this attack, seed by seed).")))
    pngs["attack.png"] = png_bytes(figure_attack(attack, class_id=src,
                                                 class_name=names[src]))
    blocks.append(Block("img", "attack.png", (f"{names[src]}: the attack and the "
                                              "certified bound",)))
    blocks.append(Block("table", table=attack_view(attack, src)))
    blocks.append(Block("h2", "Retrained base models per attack"))
    blocks.append(Block("table", table=retrain_view(t["ensembles"])))
    blocks.append(Block("h2", "Published numbers (CIFAR-10), beside ours"))
    blocks.append(Block("ul", items=PUBLISHED))
    blocks.append(Block("p", published_note(meta)))
    for name, data in pngs.items():
        results.atomic_write_bytes(out / name, data)
    results.atomic_write_bytes(out / "certify.md", markdown(blocks).encode())
    path = out / "certify.html"
    results.atomic_write_bytes(path, html_page(blocks, pngs, "certify").encode())
    return path
