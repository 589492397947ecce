"""The report's words and layout: blocks of text, rendered as Markdown and HTML.

`text_blocks` turns the facts into sentences; `markdown` and `html_page` lay
the same blocks out (the HTML embeds the figures, so the one file can be
mailed). Nothing here computes a statistic (see `facts`) or draws (`figures`).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sweep import stats
from sweep.report.facts import ALPHA, THRESHOLD_DROP, Facts
from sweep.report.figures import DPI


@dataclass(frozen=True)
class Block:
    """One piece of the report: kind in h1, h2, p, note, ul, img, table."""

    kind: str
    text: str = ""
    items: tuple[str, ...] = ()
    table: pd.DataFrame | None = field(default=None, compare=False)


def markdown(blocks: Sequence[Block]) -> str:
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


def html_page(blocks: Sequence[Block], pngs: dict[str, bytes], title: str) -> str:
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


def png_bytes(figure: Figure) -> bytes:
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


def text_blocks(facts: Facts, summary: pd.DataFrame) -> list[Block]:
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
