"""What the CLI prints at the end of a run or a report: tables and headlines.

Reads only a results folder (and the report's facts), so the same lines come
out whether the sweep just finished or is re-reported later.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from sweep.report.matrix_report import ranked_pairs
from sweep.stats import asr_by_count, threshold_table


def print_summary(out: Path) -> None:
    """The cat and dog (source and target) deltas per count, and where files are."""
    manifest = json.loads((out / "manifest.json").read_text())
    summary = pd.read_parquet(out / "summary.parquet")
    if "pairs" in manifest:
        print_matrix_summary(out, manifest, summary)
        return
    if "attack" in manifest:
        print_backdoor_summary(out, manifest)
        return
    if summary.empty:  # --counts 0: clean replicas only, no twin to compare
        print("\nno poisoned count in this sweep (--counts 0): no deltas to show; "
              "the clean replicas' accuracies are in metrics.parquet")
        print(f"\nresults: {out}/ (metrics.parquet, summary.parquet, manifest.json)")
        return
    names = manifest["class_names"]
    src, tgt = names[manifest["source_id"]], names[manifest["target_id"]]
    level = (
        int(round(100 * float(summary["level"].iloc[0]))) if "level" in summary else 95
    )
    n_seeds = int(summary["n_seeds"].max()) if len(summary) else 0
    print(f"\naccuracy change vs clean twin, percentage points, mean over {n_seeds} "
          f"seeds [{level}% CI]")
    print(f"{'count':>7}  {src + ' delta':>24}  {tgt + ' delta':>24}")
    for count, rows in summary.groupby("count"):
        cells = []
        for name in (src, tgt):
            r = rows[rows["class_name"] == name].iloc[0]
            cells.append(_cell(r))
        print(f"{count:>7}  {cells[0]:>24}  {cells[1]:>24}")
    if n_seeds < 2:
        print("(intervals need at least 2 seeds; this sweep has 1)")
    n_diverged = int(manifest.get("n_diverged") or 0)
    if n_diverged:
        print(f"{n_diverged} replica(s) diverged (loss went non-finite) and are left "
              "out of these statistics; the report names them")
    print(f"\nresults: {out}/ (metrics.parquet, summary.parquet, manifest.json)")


def _cell(r) -> str:
    if math.isnan(r["ci_low"]):
        return f"{r['delta_mean']:+.2f}"
    return f"{r['delta_mean']:+.2f} [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"


def print_headlines(facts) -> None:
    """The answers a reader wants first, as the report states them."""
    f = facts
    if f.seeds_note:
        print(f"note: {f.seeds_note}")
    print(f.threshold_text)
    for name in (f.source, f.target):
        count = f.effective.get(name)
        print(f"{name}: smallest effective count "
              f"{'none declared' if count is None else count} (confirmatory, "
              f"fixed sequence, familywise error <= {f.alpha:g})")
        if f.stop_notes.get(name):
            print(f"  {name}: {f.stop_notes[name]}")
    if f.unpaired_seeds == f.unpaired_seeds:  # not NaN
        print(f"paired design: twin correlation {f.twin_corr:.2f}; an unpaired "
              f"sweep would need about {f.unpaired_seeds:.0f} seeds for intervals "
              f"this narrow")


def backdoor_tables(out: Path, manifest: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """asr.parquet and asr_thresholds.parquet, computed when absent (older runs)."""
    paths = out / "asr.parquet", out / "asr_thresholds.parquet"
    if all(p.is_file() for p in paths):
        return pd.read_parquet(paths[0]), pd.read_parquet(paths[1])
    metrics = pd.read_parquet(out / "metrics.parquet")
    return asr_by_count(metrics), threshold_table(
        metrics, n_train=manifest["data"]["n_train"])


def _interval(mean: float, low: float, high: float, sign: str = "") -> str:
    if math.isnan(low):
        return f"{mean:{sign}.1f}"
    return f"{mean:{sign}.1f} [{low:{sign}.1f}, {high:{sign}.1f}]"


def print_backdoor_summary(out: Path, manifest: dict) -> None:
    """Attack success per count at the last epoch: mean ASR over seeds with its
    interval, the clean-accuracy cost against the clean twins (paired), and
    the poisoned share at which mean ASR reaches 50% and 90%, with its set."""
    attack = manifest["attack"]
    table, thresholds = backdoor_tables(out, manifest)
    level = int(round(100 * float(table["level"].iloc[0])))
    over = (f"{attack['source']} test images" if attack["source_id"] >= 0
            else f"test images of every class but {attack['target']}")
    print(f"\n{attack['name']} backdoor into {attack['target']}: attack success "
          f"rate (percent of the {table['n_stamped'].max()} stamped {over} "
          f"predicted {attack['target']}), last epoch, mean over seeds "
          f"[{level}% CI]")
    n_train = manifest["data"]["n_train"]
    print(f"{'count':>7}  {'share':>6}  {'mean ASR':>20}  {'clean acc':>9}  "
          f"{'clean-acc cost, points':>22}  {'robust acc':>10}  seeds")
    notes = []
    for r in table.itertuples():
        asr = _interval(r.asr_mean, r.asr_low, r.asr_high)
        cost = ("(clean twin)" if r.count == 0
                else _interval(r.cost_mean, r.cost_low, r.cost_high, "+"))
        mark = ""
        if r.note:
            if r.note not in notes:
                notes.append(r.note)
            mark = "*" * (notes.index(r.note) + 1)
        print(f"{r.count:>7}  {100 * r.count / n_train:>5.2f}%  {asr + mark:>20}  "
              f"{r.test_accuracy_mean:>9.1f}  {cost:>22}  {r.robust_mean:>10.1f}  "
              f"{r.n_seeds}")
    methods = "; ".join(dict.fromkeys(table["asr_method"]))
    print("(count 0: the clean twins' natural rate; mean ASR interval: "
          f"{methods} (sweep.stats.attack_success); clean acc: "
          "test accuracy without the trigger; its cost: poisoned minus clean twin, "
          "paired t)")
    for i, note in enumerate(notes, 1):
        print(f"{'*' * i} {note}")
    for r in thresholds.itertuples():
        print(f"ASR >= {r.threshold:g}%: {r.statement}")
        if math.isfinite(r.share) and math.isfinite(r.share_low):
            high = ("beyond the largest count" if r.share_high == math.inf
                    else f"{r.share_high:.2f}%")
            print(f"  as a share of the {n_train} training images: {r.share:.2f}% "
                  f"({level}% set within {r.share_low:.2f}% to {high})")
    n_diverged = int(manifest.get("n_diverged") or 0)
    if n_diverged:
        print(f"{n_diverged} replica(s) diverged (loss went non-finite) and are left "
              "out of these numbers")
    print(f"\nresults: {out}/ (metrics.parquet with asr and robust_accuracy, "
          "summary.parquet with the ASR delta and clean-accuracy rows, asr.parquet, "
          "asr_thresholds.parquet, poisoned.parquet, manifest.json)")


def print_matrix_summary(out: Path, manifest: dict, summary: pd.DataFrame) -> None:
    """The ranked pairs at the largest count, for the end of a matrix run."""
    ranked = ranked_pairs(summary, manifest["class_names"])
    level = int(round(100 * float(summary["level"].iloc[0]))) if len(summary) else 95
    print(f"\nattack matrix: accuracy change vs the shared clean twin at the largest "
          f"count, points, mean [{level}% CI], most damaging first")
    print(ranked.to_string(index=False))
    if len(summary) and int(summary["n_seeds"].max()) < 2:
        print("(intervals need at least 2 seeds)")
    print(f"\nresults: {out}/ (metrics.parquet, summary.parquet per pair, "
          "manifest.json)")
