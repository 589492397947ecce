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
    """One piece of the report: kind in h1, h2, p, note, ul, img, table, link
    (text: a relative address, items[0]: what it is)."""

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
        elif b.kind == "link":
            out.append(f"[{b.items[0]}]({b.text})")
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
        elif b.kind == "link":
            out.append(f'<p><a href="{e(b.text)}">{e(b.items[0])}</a></p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _fmt(x: float, digits: int = 2) -> str:
    return "-" if not np.isfinite(x) else f"{x:.{digits}f}"


def _fmt_p(p: float) -> str:
    """A p-value: fixed point, or two significant digits once that would read 0."""
    if not np.isfinite(p):
        return "-"
    return f"{p:.2g}" if 0 < p < 1e-3 else f"{p:.4f}"


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
            "p (t)": [_fmt_p(p) for p in rows["p_value"]],
            "p adjusted": [_fmt_p(p) for p in rows["p_adjusted"]],
            "declared": [
                "yes" if s else ("-" if not np.isfinite(p) else "no")
                for s, p in zip(rows["significant"], rows["p_adjusted"])
            ],
            "family": rows["family"],
            "p sign-flip": [_fmt_p(p) for p in rows["p_signflip"]],
            "twin r": [_fmt(r) for r in rows["twin_corr"]],
            "MDE": [_fmt(m) for m in rows["mde"]],
        }
    )


def text_blocks(facts: Facts, summary: pd.DataFrame) -> list[Block]:
    """The report's words, before the figures."""
    f = facts
    blocks = [
        Block("h1", f"Label-{f.strategy} poisoning: {f.source} -> {f.target} "
                    f"({f.title})")
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
                f"Intervals: {f.level:.0%} "
                + ("paired t" if f.paired else "Welch t")
                + " (simulated coverage 93-97% at 3-16 seeds: docs/statistics.md). "
                "No bootstrap interval: at these seed counts it covers well under "
                "its nominal level.",
                "p-values: the "
                + ("paired t" if f.paired else "Welch t")
                + " test of the interval; the exact "
                + ("sign-flip" if f.paired else "label permutation")
                + " test is a robustness column (p sign-flip).",
                f"Confirmatory family, fixed before the data: {f.source} and "
                f"{f.target} at every count. Each class's counts are tested from the "
                "largest down, stopping at the first that is not significant "
                f"(fixed sequence, each class at alpha/2, the alpha of a class that "
                f"rejects every count passed to the other): familywise error at most "
                f"{f.alpha:g} over the whole family.",
                f"Exploratory: the other classes ({f.n_exploratory} count x class "
                "rows), Holm-adjusted among themselves; hypotheses for a next sweep, "
                "not confirmed findings.",
            ),
        ),
        Block("h2", "Answers"),
    ]
    def first(name: str) -> str:
        count = f.effective.get(name)
        return "no count declared" if count is None else str(count)

    how = "given"
    if not f.threshold_given:
        how = (
            f"no --threshold given: {THRESHOLD_DROP:g} points below clean accuracy, "
            f"or half of it when that is under {2 * THRESHOLD_DROP:g}%"
        )
    answers = [
        f"Confirmatory: smallest effective count (familywise error "
        f"<= {f.alpha:g}, fixed-sequence test from the largest count down) on "
        f"{f.source}: {first(f.source)}; on {f.target}: {first(f.target)}."
        + "".join(
            f" {name}: {note}."
            for name, note in f.stop_notes.items()
            if note is not None
        ),
        f"Threshold ({how}): {f.threshold_text} The interval holds the counts "
        "where the t test along the mean accuracy curve does not reject "
        "(Fieller), taking accuracy as linear between tested counts.",
    ]
    others = [
        name
        for k, name in ((k, _name(summary, k)) for k in f.moved)
        if k not in (f.source_id, f.target_id)
    ]
    answers.append(
        "Exploratory: other classes that moved (Holm-adjusted p <= "
        f"{ALPHA:g} at some count among the other classes): "
        f"{', '.join(others) if others else 'none'}."
    )
    if f.paired and np.isfinite(f.unpaired_seeds):
        answers.append(
            f"Pairing: median twin correlation r = {_fmt(f.twin_corr)}; an unpaired "
            f"sweep would need about {f.unpaired_seeds:.0f} seeds per count for "
            f"{f.level:.0%} intervals as narrow as these {f.n_seeds} paired seeds "
            "give (expected t widths, each with its own degrees of freedom, pooled "
            "over rows)."
        )
    elif f.paired:
        answers.append("Pairing benefit: not measurable with fewer than 3 seeds.")
    else:
        answers.append("Pairing: this sweep is unpaired, so nothing to compare.")
    if np.isfinite(f.mde_source):
        answers.append(
            f"Power of the rule used: with these seeds the confirmatory test "
            f"({'paired' if f.paired else 'Welch'} t at alpha/2 = "
            f"{f.alpha / 2:g}) declares an effect of {_fmt(f.mde_source)} points on "
            f"{f.source} at count {f.counts[-1]} with power "
            f"{stats.POWER_TARGET:.0%}; an exploratory row needs about "
            f"{_fmt(f.mde_exploratory)} points (Holm). Pooled delta sd "
            f"{f.pooled_sd:.2f} points: declaring 1 point would need "
            f"{f.seeds_for_one_point} seeds (python -m sweep plan)."
        )
    else:
        answers.append("Power: cannot be estimated with fewer than 2 seeds.")
    p_flip, floor = f.signflip_source
    if f.paired and np.isfinite(p_flip):
        answers.append(
            f"Robustness: the exact sign-flip test (no normality assumed) gives "
            f"p = {_fmt_p(p_flip)} for {f.source} at count {f.counts[-1]}; with "
            f"these seeds it cannot go below {_fmt_p(floor)}"
            + (", which is why it is a check here and not the decision test."
               if floor > ALPHA / 2 else
               "; it is kept as a check beside the paired t test.")
        )
    blocks.append(Block("ul", items=tuple(answers)))
    return blocks


def _name(summary: pd.DataFrame, class_id: int) -> str:
    return str(summary.loc[summary["class_id"] == class_id, "class_name"].iloc[0])
