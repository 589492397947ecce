"""Per poisoned count: the mean ASR with its interval, and the paired deltas.

`mean_asr_by_count` is the dose-response of ASR against the poisoned count:
each count's usable seeds alone (count 0, the clean twins, included), the
interval of `fiducial_mean` with the one line it needs where it is one-sided,
conservative or absent. `asr_deltas` gives, per poisoned count, the twins'
ASRs and the paired delta's interval and p-value (`bootstrap_t`): the ASR rows
of the summary, which decides them with the target class's accuracy
(`sweep.stats.summary`). `fixed_sequence_adjusted` is one fixed sequence alone.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sweep.stats.attack_success.asr_design import as_replica_table, asr_design
from sweep.stats.attack_success.bootstrap_t import DELTA_METHOD, asr_delta_interval
from sweep.stats.attack_success.fiducial_mean import (
    AT_BOUND,
    DEFAULT_DRAWS,
    FEW,
    FEW_EVENTS,
    MEAN_METHODS,
    mean_asr_interval,
)
from sweep.stats.design import check_level
from sweep.stats.intervals import _rng

MEAN_COLUMNS = (
    "count",
    "n_seeds",  # usable replicas of this count
    "n_diverged",  # replicas of this count left out (diverged)
    "asr_mean",  # percent: mean ASR over those seeds
    "asr_low",  # its interval at `level` (asr_method)
    "asr_high",
    "asr_method",
    "note",  # one line where the interval is one-sided, conservative or absent
    "level",
    "epoch",
)
UNPAIRED_METHOD = "none (unpaired sweep: the ASR delta test needs twins)"


def mean_note(regime: int, low: float, high: float, level: float) -> str:
    """The one line a row carries when its interval is not a plain two-sided one."""
    if regime == AT_BOUND and high >= 1:
        return (
            f"every seed at 100%: mean ASR >= {100 * low:.2f}% (the lower end of "
            f"a {level:.0%} interval that reaches 100%; no upper end to state)"
        )
    if regime == AT_BOUND:
        return (
            f"every seed at 0%: mean ASR <= {100 * high:.2f}% (the upper end of "
            f"a {level:.0%} interval that starts at 0%; no lower end to state)"
        )
    if regime == FEW:
        return (
            f"fewer than {FEW_EVENTS:g} of the rarer outcome per seed: the interval "
            f"also holds Wilson's; conservative (covers at least {level:.0%})"
        )
    return ""


def mean_asr_by_count(
    table: pd.DataFrame,
    *,
    level: float = 0.95,
    epoch: int | None = None,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
) -> pd.DataFrame:
    """Mean ASR over seeds and its interval at every count (0 included).

    Args:
      table: per-replica ASR rows (`asr_design`) or a backdoor's metrics table.
      level: confidence level.
      epoch: the epoch analysed; None for the last.
      draws: fiducial draws per interval.
      rng: generator; None: fixed seed 0.

    Returns:
      One row per count, MEAN_COLUMNS (percent).
    """
    check_level(level)
    rng = _rng(rng)
    design = asr_design(as_replica_table(table), epoch=epoch)
    rows = []
    for j, count in enumerate(design.counts):
        ok = np.isfinite(design.hits[:, j])
        x, n = design.hits[ok, j], design.n[ok, j]
        row = {"count": int(count), "n_seeds": int(ok.sum()),
               "n_diverged": int(design.n_diverged[j])}
        if x.size < 2:
            row.update(asr_mean=100 * float((x / n).mean()) if x.size else math.nan,
                       asr_low=math.nan, asr_high=math.nan,
                       asr_method="none (n < 2)",
                       note="an interval needs at least 2 seeds")
        else:
            mean, low, high, regime = (
                float(a) for a in mean_asr_interval(x, n, level=level, draws=draws,
                                                    rng=rng))
            row.update(asr_mean=100 * mean, asr_low=100 * low, asr_high=100 * high,
                       asr_method=MEAN_METHODS[int(regime)],
                       note=mean_note(int(regime), low, high, level))
        rows.append(row)
    out = pd.DataFrame(rows)
    out["level"] = level
    out["epoch"] = design.epoch
    return out[list(MEAN_COLUMNS)]


def asr_deltas(
    table: pd.DataFrame,
    *,
    level: float = 0.95,
    epoch: int | None = None,
    draws: int = DEFAULT_DRAWS,
    rng: np.random.Generator | None = None,
) -> list[dict]:
    """Per poisoned count, the twins' ASRs and the paired delta's statistics.

    Args:
      table: per-replica ASR rows or a backdoor's metrics table.
      level, epoch, draws, rng: as `mean_asr_by_count`.

    Returns:
      One dict per count > 0, ascending: count; clean, poisoned ((n,) percent
      ASR of the seeds whose twins are both usable; an unpaired sweep: every
      usable replica of each count); delta_mean (points), ci_low, ci_high,
      p_value (NaN where not stated) and p_method.
    """
    check_level(level)
    rng = _rng(rng)
    design = asr_design(as_replica_table(table), epoch=epoch)
    hits, n = design.hits, design.n
    rows = []
    for j in range(1, design.counts.size):
        if design.paired:
            ok = np.isfinite(hits[:, 0]) & np.isfinite(hits[:, j])
            ok_clean = ok_poisoned = ok
        else:
            ok_clean, ok_poisoned = np.isfinite(hits[:, 0]), np.isfinite(hits[:, j])
        xc, nc = hits[ok_clean, 0], n[ok_clean, 0]
        xp, np_ = hits[ok_poisoned, j], n[ok_poisoned, j]
        clean, poisoned = 100 * xc / nc, 100 * xp / np_
        row = {"count": int(design.counts[j]), "clean": clean, "poisoned": poisoned,
               "delta_mean": (float(poisoned.mean() - clean.mean())
                              if clean.size and poisoned.size else math.nan),
               "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan}
        if not design.paired:
            row["p_method"] = UNPAIRED_METHOD
        elif xc.size < 2:
            row["p_method"] = "none (n < 2)"
        else:
            delta, low, high, p = (
                float(a) for a in asr_delta_interval(xc, xp, nc, np_, level=level,
                                                     draws=draws, rng=rng))
            row.update(delta_mean=100 * delta, ci_low=100 * low, ci_high=100 * high,
                       p_value=p,
                       p_method=DELTA_METHOD if math.isfinite(p)
                       else "none (no spread)")
        rows.append(row)
    return rows


def fixed_sequence_adjusted(p_values: np.ndarray) -> np.ndarray:
    """Adjusted p-values of one fixed sequence, tested from the last entry down.

    Counts ascend, so the sequence starts at the largest count; a count's
    adjusted p is the largest raw p at it or any larger count (a NaN counts as
    1: the sequence stops there). NaN in, NaN out. The summary runs the ASR
    sequence beside the target class's (`confirmatory_adjusted`); this is the
    ASR sequence alone at the full alpha, as the FWER simulation checks it.

    Args:
      p_values: (C,) raw p-values at ascending counts (NaN allowed).

    Returns:
      (C,) adjusted p-values.
    """
    p = np.asarray(p_values, dtype=float)
    filled = np.where(np.isfinite(p), p, 1.0)
    adjusted = np.maximum.accumulate(filled[::-1])[::-1]
    return np.where(np.isfinite(p), np.minimum(adjusted, 1.0), np.nan)
