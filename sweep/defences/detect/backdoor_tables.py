"""A backdoor detect run's tables: detection graded against the planted truth,
its summary over seeds, and the repair's ASR and clean accuracy, paired by seed.

Pure pandas/NumPy over the run's parquet tables (`backdoor_run`). Detection is
graded among the images the detectors examine (those labelled the attack's
target), where every poisoned image is.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sweep import stats
from sweep.defences.detect import scoring
from sweep.stats.attack_success import (
    DELTA_METHOD,
    asr_delta_interval,
    mean_asr_interval,
    replica_table,
)

DETECTORS = ("spectral", "clustering")
MULTIPLIER = 1.5  # the spectral-signature paper's removal budget, 1.5 epsilon
METRICS = ("precision_at_k", "recall_at_k", "precision_at_1.5k", "recall_at_1.5k",
           "precision_flag", "recall_flag", "n_flagged", "average_precision",
           "auroc")
PROPORTIONS = {m for m in METRICS if m != "n_flagged"}
ASR_METHOD = ("mean ASR: fiducial logit-normal interval over seeds "
              "(sweep.stats.attack_success.mean_asr_interval); repaired - "
              f"poisoned: {DELTA_METHOD}; clean accuracy: paired t over seeds")


def grade(suspects: pd.DataFrame) -> pd.DataFrame:
    """Per replica x detector: every metric, against the planted truth.

    Args:
      suspects: one row per replica x target-class image: count, seed,
        poisoned, <detector>_score, <detector>_flag.
    Returns:
      count, seed, detector, k (planted), n_examined and METRICS. The clean
      twin (count 0) has nothing to find: only its n_flagged (false flags) and
      precision_flag (0 when it flags anything) are defined.
    """
    rows = []
    for (count, seed), g in suspects.groupby(["count", "seed"], sort=True):
        truth = g["poisoned"].to_numpy(bool)
        k = int(truth.sum())
        for det in DETECTORS:
            score = g[f"{det}_score"].to_numpy(float)
            flag = g[f"{det}_flag"].to_numpy(bool)
            row = {"count": int(count), "seed": int(seed), "detector": det, "k": k,
                   "n_examined": len(g)}
            row.update(scoring.grade(score, truth, flag, k=k))
            p15, r15 = scoring.precision_recall_at_k(
                score, truth, math.ceil(MULTIPLIER * k))
            row["precision_at_1.5k"], row["recall_at_1.5k"] = p15, r15
            rows.append(row)
    return pd.DataFrame(rows)


def summary(per_seed: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
    """Mean and t interval over seeds of every metric, per count x detector
    (as `scoring.summarize`, with the 1.5k metrics; undefined metrics of the
    clean twin are left out). Proportions are clipped to [0, 1], which never
    lowers coverage."""
    rows = []
    for (count, det), g in per_seed.groupby(["count", "detector"], sort=True):
        for metric in METRICS:
            x = g[metric].to_numpy(float)
            x = x[np.isfinite(x)]
            if x.size == 0:
                continue
            mean, (low, high) = stats.t_interval(x, level=level)
            if metric in PROPORTIONS:
                low, high = max(low, 0.0), min(high, 1.0)
            else:
                low = max(low, 0.0)
            rows.append({"count": int(count), "detector": det, "metric": metric,
                         "n_seeds": int(x.size), "mean": mean, "ci_low": low,
                         "ci_high": high, "level": level})
    return pd.DataFrame(rows)


def _last(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics[metrics["epoch"] == metrics["epoch"].max()]


def _per_replica(metrics: pd.DataFrame) -> pd.DataFrame:
    """count, seed -> asr_hits, asr_n, test_accuracy, diverged at the last epoch."""
    last = _last(metrics)
    asr = replica_table(last).set_index(["count", "seed"])
    acc = last.drop_duplicates("replica").set_index(["count", "seed"])
    asr["test_accuracy"] = acc["test_accuracy"]
    return asr


def repair_table(metrics: pd.DataFrame, repaired: pd.DataFrame, *,
                 level: float = 0.95, rng_seed: int = 0) -> pd.DataFrame:
    """Per count x detector: ASR and clean accuracy of the poisoned and the
    repaired replicas, means over seeds with intervals, and repaired -
    poisoned paired by seed; what the removal took out.

    Args:
      metrics: the poisoned and clean replicas' metrics (backdoor_metrics).
      repaired: the repaired replicas' metrics, with detector, n_removed,
        n_poison_removed.
    Returns:
      One row per count x detector; ASR and accuracies in percent.
    """
    pois = _per_replica(metrics)
    clean = pois.xs(0, level="count")
    rows = []
    for det, r in repaired.groupby("detector", sort=False):
        fixed = _per_replica(r)
        removed = _last(r).drop_duplicates("replica").set_index(["count", "seed"])
        for count in sorted(set(fixed.index.get_level_values("count"))):
            seeds = [s for s in fixed.loc[count].index
                     if (count, s) in pois.index
                     and not pois.loc[(count, s), "diverged"]
                     and not fixed.loc[(count, s), "diverged"]]
            if len(seeds) < 2:
                continue
            a = pois.loc[[(count, s) for s in seeds]]
            b = fixed.loc[[(count, s) for s in seeds]]
            rng = np.random.default_rng(rng_seed)
            row = {"count": int(count), "detector": det, "n_seeds": len(seeds)}
            for name, t in (("poisoned", a), ("repaired", b)):
                mean, low, high, _ = mean_asr_interval(
                    t["asr_hits"].to_numpy(), t["asr_n"].to_numpy(), level=level,
                    rng=rng)
                row.update({f"asr_{name}": 100 * float(mean),
                            f"asr_{name}_low": 100 * float(low),
                            f"asr_{name}_high": 100 * float(high)})
            delta, low, high, p = asr_delta_interval(
                a["asr_hits"].to_numpy(), b["asr_hits"].to_numpy(),
                a["asr_n"].to_numpy(), b["asr_n"].to_numpy(), level=level, rng=rng)
            row.update({"asr_delta": 100 * float(delta),
                        "asr_delta_low": 100 * float(low),
                        "asr_delta_high": 100 * float(high), "asr_delta_p": float(p)})
            c = clean.loc[[s for s in seeds if s in clean.index]]
            row["asr_clean_twin"] = 100 * float((c["asr_hits"] / c["asr_n"]).mean())
            acc_a = a["test_accuracy"].to_numpy(float)
            acc_b = b["test_accuracy"].to_numpy(float)
            mean, (low, high) = stats.t_interval(acc_b - acc_a, level=level)
            row.update({"accuracy_poisoned": float(acc_a.mean()),
                        "accuracy_repaired": float(acc_b.mean()),
                        "accuracy_delta": mean, "accuracy_delta_low": low,
                        "accuracy_delta_high": high})
            gone = removed.loc[[(count, s) for s in seeds]]
            row["n_removed"] = float(gone["n_removed"].mean())
            row["n_poison_removed"] = float(gone["n_poison_removed"].mean())
            row["level"] = level
            row["method"] = ASR_METHOD
            rows.append(row)
    return pd.DataFrame(rows)


def _ci(mean, low, high, digits=1, scale=1.0) -> str:
    if not np.isfinite(mean):
        return "-"
    m, lo, hi = (scale * x for x in (mean, low, high))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def detection_lines(detection: pd.DataFrame) -> list[str]:
    """The detection summary as text: per count x detector, percent."""
    if detection.empty:
        return ["no detection rows"]
    level = int(round(100 * detection["level"].iloc[0]))
    cols = ("precision_at_k", "recall_at_1.5k", "auroc", "n_flagged")
    head = (f"{'count':>7} {'detector':<11} {'precision@k':>20} "
            f"{'recall@1.5k':>20} {'AUROC':>20} {'flagged':>20}")
    lines = [f"backdoor detection (mean over seeds [{level}% t interval]; "
             "percent, flagged in images)", head]
    for (count, det), g in detection.groupby(["count", "detector"], sort=True):
        m = g.set_index("metric")
        cells = []
        for col in cols:
            if col not in m.index:
                cells.append(f"{'-':>20}")
                continue
            scale = 1.0 if col == "n_flagged" else 100.0
            text = _ci(*m.loc[col, ["mean", "ci_low", "ci_high"]], scale=scale)
            cells.append(f"{text:>20}")
        lines.append(f"{count:>7} {det:<11} " + " ".join(cells))
    return lines


def repair_lines(repair: pd.DataFrame) -> list[str]:
    """The repair table as text."""
    if repair.empty:
        return ["no repair rows"]
    level = int(round(100 * repair["level"].iloc[0]))
    lines = [f"repair by removal (mean over seeds [{level}% interval]; ASR and "
             "clean accuracy in percent)",
             f"{'count':>7} {'detector':<11} {'removed (poison)':>17} "
             f"{'ASR poisoned':>20} {'ASR repaired':>20} {'ASR change':>22} "
             f"{'accuracy change':>20}"]
    for _, r in repair.iterrows():
        poisoned, repaired, delta, acc = (
            _ci(r[name], r[f"{name}_low"], r[f"{name}_high"])
            for name in ("asr_poisoned", "asr_repaired", "asr_delta",
                         "accuracy_delta"))
        lines.append(
            f"{r['count']:>7} {r['detector']:<11} "
            f"{r['n_removed']:>8.1f} ({r['n_poison_removed']:.1f}) "
            f"{poisoned:>20} {repaired:>20} {delta:>22} {acc:>20}")
    lines.append("ASR: " + ASR_METHOD)
    return lines
