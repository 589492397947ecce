"""`write_report`: a results folder in, report.md, report.html and PNGs out.

It reads a finished results folder, recomputes every statistic (`sweep.stats`,
fixed generator so the report is reproducible), rewrites summary.parquet,
draws the figures (`figures`) from the numbers (`facts`) and lays them out
(`rendering`). Figures that need the training images are skipped with a note
when the data cannot be loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from sweep import results as results_lib
from sweep import stats
from sweep.errors import SweepError
from sweep.report import (
    backdoor_report,
    figures,
    matrix_report,
    rendering,
    training_set,
)
from sweep.report import facts as facts_lib
from sweep.report.facts import Facts
from sweep.report.rendering import Block, key_table

FLIPPED_SHOWN = 24  # images in the flipped-image grid
REPORT_SEED = 0  # the report's resampling generator: same folder, same report


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
    if matrix_report.is_matrix_folder(results_dir):  # many pairs: their own report
        return matrix_report.write_matrix_report(results_dir, level=level)
    if backdoor_report.is_backdoor_folder(results_dir):  # ASR, not flips
        return backdoor_report.write_backdoor_report(results_dir, level=level)
    a = analyse(results_dir, level=level, threshold=threshold)
    results, summary, facts = a.results, a.summary, a.facts
    out = results.path
    results_lib.write_parquet(summary, out / "summary.parquet")
    blocks = rendering.text_blocks(facts, summary)
    detect = detect_report_of(out)
    if detect is not None:
        blocks.insert(1, Block("link", os.path.relpath(detect, out), items=(
            "Defences: the detect report of this sweep (detection and repair)",)))
    pngs: dict[str, bytes] = {}
    blocks.append(Block("h2", "Figures"))
    drawn, notes = plan_figures(a, level=level)
    for name, caption, draw in drawn:
        pngs[name] = rendering.png_bytes(draw())
        results_lib.atomic_write_bytes(out / name, pngs[name])
        blocks.append(Block("img", name, items=(caption,)))
    if notes:
        blocks.append(Block("ul", items=tuple(notes)))
    blocks += [
        Block("h2", f"{facts.source} and {facts.target}"),
        Block(
            "p",
            "Deltas in percentage points (poisoned minus clean), t intervals at "
            f"{level:.0%}; p (t): the test of that interval; p "
            "adjusted and declared: the confirmatory fixed-sequence rule (source, "
            "target) or Holm (exploratory, other classes), familywise alpha "
            f"{facts_lib.ALPHA:g}; p sign-flip: robustness check; MDE: effect the row's test "
            f"declares with power {stats.POWER_TARGET:.0%} (at alpha/2 confirmatory, "
            "alpha/m exploratory). Every statistic of every class is in "
            "summary.parquet.",
        ),
        Block("table", table=key_table(summary, [facts.source_id, facts.target_id])),
        Block("h2", "All classes"),
        Block(
            "table", table=key_table(summary, sorted(summary["class_id"].unique()))
        ),
    ]
    markdown = rendering.markdown(blocks)
    results_lib.atomic_write_bytes(out / "report.md", markdown.encode())
    page = rendering.html_page(blocks, pngs, facts.title)
    results_lib.atomic_write_bytes(out / "report.html", page.encode())
    if on_facts is not None:
        on_facts(facts)
    return out / "report.html"


def detect_report_of(out: Path) -> Path | None:
    """The `detect` report whose twins this sweep is: a detect run keeps its
    clean and poisoned twins as an ordinary sweep in OUT/sweep/ beside
    OUT/detect.json and OUT/detect.html."""
    root = Path(out).resolve().parent
    if Path(out).name == "sweep" and (root / "detect.json").is_file() and (
            root / "detect.html").is_file():
        return root / "detect.html"
    return None


class Analysis(NamedTuple):
    """A finished sweep's numbers as the report states them."""

    results: results_lib.SweepTables
    summary: pd.DataFrame  # stats.summarize at the report's level
    facts: Facts
    rng: np.random.Generator  # the report's generator, as far as the facts used it


def analyse(results_dir: str | os.PathLike, *, level: float = 0.95,
            threshold: float | None = None) -> Analysis:
    """Load a finished folder and compute the report's numbers (writes nothing)."""
    if not 0 < level < 1:
        raise SweepError(f"--level must be between 0 and 1 (e.g. 0.95), got {level}")
    if threshold is not None and not 0 <= threshold <= 100:
        raise SweepError(f"--threshold is a percent (0-100), got {threshold}")
    if matrix_report.is_matrix_folder(results_dir):
        raise SweepError(f"{results_dir} is an attack matrix: its report is per pair "
                         "(python -m sweep report writes it)")
    results = results_lib.load_results(results_dir)
    if "attack" in results.manifest:  # its own report: backdoor_report
        raise SweepError(f"{results.path} is a backdoor sweep: its report is "
                         "write_report's (sweep.report.backdoor_report)")
    rng = np.random.default_rng(REPORT_SEED)
    summary = stats.summarize(
        results.metrics,
        level=level,
        classes=stats.classes_of(results.manifest),
        alpha=facts_lib.ALPHA,
        rng=rng,
    )
    if summary.empty:
        raise SweepError(f"{results.path} has no poisoned replicas: nothing to report")
    facts = facts_lib.facts_of(results, summary, level=level, threshold=threshold)
    return Analysis(results, summary, facts, rng)


Drawing = tuple[str, str, Callable[[], Figure]]  # file name, caption, draw()


def plan_figures(a: Analysis, *, level: float,
                 only: str | None = None) -> tuple[list[Drawing], list[str]]:
    """The report's figures, in order, as (file name, caption, draw), and notes on
    those left out. The numbers are computed here, in the report's order (they
    share its generator, so plan once per `analyse`); drawing waits for `draw()`.
    `only`: just that file name.
    """
    results, summary, facts, rng = a
    metrics = results.metrics
    class_names = tuple(
        summary.drop_duplicates("class_id").sort_values("class_id")["class_name"]
    )
    skip = facts_lib.diverged_replicas(metrics, facts.epoch)
    drawn: list[Drawing] = []
    notes: list[str] = []

    def wanted(*names: str) -> bool:
        return only is None or only in names

    def add(name: str, caption: str, draw: Callable[[], Figure]) -> None:
        if wanted(name):
            drawn.append((name, caption, draw))

    shown = dict.fromkeys((facts.source_id, facts.target_id, *facts.moved))
    curves = {
        class_names[k]: stats.dose_response(metrics, class_id=k, level=level)
        for k in shown
    }
    source_curve = stats.dose_response(
        metrics,
        class_id=facts.source_id,
        level=level,
        increasing=False,
        absolute=True,
    )
    add(
        "dose_response.png",
        f"Dose-response: accuracy change vs flipped labels (mean with its "
        f"{level:.0%} t interval at each count; the band joins those pointwise "
        "intervals for the eye and is not simultaneous; isotonic fit descriptive); "
        f"last panel: {facts.source} accuracy, the {facts.threshold:g}% threshold "
        "and the interval of its crossing.",
        lambda: figures.figure_dose_response(
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
        lambda: figures.figure_class_accuracy(
            groups, count=facts.counts[-1], level=level
        ),
    )
    if not wanted("confusion.png"):
        pass
    elif results.confusion is not None and len(results.confusion):
        means = facts_lib.confusion_means(
            results.confusion, epoch=facts.epoch, skip=skip, k=len(class_names)
        )
        if 0 in means and len(means) > 1:
            add(
                "confusion.png",
                "Test confusion, row percent, mean over seeds: clean, poisoned at "
                "each count, and poisoned minus clean.",
                lambda: figures.figure_confusion(means, class_names),
            )
    else:
        notes.append("confusion.parquet is missing: no confusion matrices.")
    add(
        "training_curves.png",
        f"Per-epoch train and test loss and accuracy per count (mean over seeds, "
        f"{level:.0%} t band).",
        lambda: figures.figure_training_curves(
            facts_lib.training_curves(metrics, level=level, skip=skip), level=level
        ),
    )
    if not wanted("class_distribution.png", "flipped_images.png"):
        return drawn, notes
    training, why = training_set.load_training_set(results.manifest, results.poisoned)
    if results.poisoned is None or not len(results.poisoned):
        notes.append("poisoned.parquet is missing: no label distribution or images.")
    elif training is None:
        notes.append(f"Label distribution and flipped images skipped: {why}.")
    else:
        table = facts_lib.class_distribution(
            training.labels, results.poisoned, len(class_names)
        )
        add(
            "class_distribution.png",
            "Training labels per class before and after poisoning at each count.",
            lambda: figures.figure_class_distribution(table, class_names),
        )
        largest = results.poisoned[results.poisoned["count"] == facts.counts[-1]]
        largest = largest[largest["seed"] == largest["seed"].min()]
        largest = largest.sort_values("index").head(FLIPPED_SHOWN)
        index = largest["index"].to_numpy(dtype=np.int64)
        add(
            "flipped_images.png",
            f"Flipped training images at count {facts.counts[-1]} (first "
            f"{len(index)} by index), old -> new label.",
            lambda: figures.figure_flipped_images(
                training.images[training.rows[index]],
                largest["old_label"].to_numpy(),
                largest["new_label"].to_numpy(),
                class_names,
                title=f"flipped at count {facts.counts[-1]}",
            ),
        )
    return drawn, notes
