"""Multiplicity: the confirmatory decision rule and the exploratory adjustment.

Confirmatory family, fixed before the data: the source and the target class at
every poisoned count. Each class's counts are tested in a fixed sequence from the
largest count down (the minimum-effective-dose design: Hsu and Berger 1999; Tamhane,
Hochberg and Dunnett 1996); the sequence stops at the first count that is not
significant, and the smallest count rejected before that is the smallest
effective count. The two sequences share alpha by the graphical approach (Bretz,
Maurer, Brannath and Posch 2009): each starts with alpha/2, and a sequence that
rejects every count passes its alpha on to the other. This is a closed,
Bonferroni-based procedure, so it controls the familywise error rate at alpha in
the strong sense under any dependence between the tests, and no test is run at
alpha divided by the family size.

Every other class at every count is exploratory: Holm over those rows
(familywise, Holm 1979), labelled exploratory in the summary and the report.
"""

from __future__ import annotations

import numpy as np

from sweep.errors import SweepError

CONFIRMATORY, EXPLORATORY = "confirmatory", "exploratory"
CONFIRMATORY_METHOD = "fixed sequence, largest count down (graphical, FWER)"
EXPLORATORY_METHOD = "Holm over the other classes (exploratory, FWER)"


def _adjusted(p_values: np.ndarray, step) -> np.ndarray:
    """Apply `step` (sorted p-values -> adjusted, same order) to the finite
    p-values; NaN entries are not part of the family and stay NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    q = p[ok]
    if q.size == 0:
        return out
    order = np.argsort(q, kind="stable")
    adjusted = np.empty(q.size)
    adjusted[order] = np.minimum(1.0, step(q[order]))
    out[ok] = adjusted
    return out


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error), NaNs left out.

    Args:
      p_values: (m,) raw p-values; NaN entries are not part of the family.

    Returns:
      (m,) adjusted p-values, NaN where the input was.
    """

    def step(q):
        return np.maximum.accumulate((q.size - np.arange(q.size)) * q)

    return _adjusted(p_values, step)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), NaNs left out.

    Args:
      p_values: (m,) raw p-values; NaN entries are not part of the family.

    Returns:
      (m,) adjusted p-values, NaN where the input was.
    """

    def step(q):
        scaled = q * q.size / np.arange(1, q.size + 1)
        return np.minimum.accumulate(scaled[::-1])[::-1]

    return _adjusted(p_values, step)


def graphical_adjusted(
    p_values: np.ndarray, weights: np.ndarray, transitions: np.ndarray
) -> np.ndarray:
    """Adjusted p-values of a sequentially rejective graphical procedure.

    Algorithm of Bretz et al. (2009), weighted Bonferroni tests: repeatedly take
    the hypothesis with the smallest p / weight, record max(that, previous
    adjusted value), remove it and pass its weight along the graph. Hypothesis i
    is rejected at level alpha exactly when its adjusted p is <= alpha.

    Args:
      p_values: (m,) raw p-values; NaN counts as 1 (never rejected).
      weights: (m,) initial shares of alpha, summing to at most 1.
      transitions: (m, m) share of hypothesis i's weight passed to j on its
        rejection; rows sum to at most 1, zero diagonal.

    Returns:
      (m,) adjusted p-values in [0, 1].
    """
    p = np.where(np.isfinite(p_values), np.asarray(p_values, dtype=float), 1.0)
    w = np.asarray(weights, dtype=float).copy()
    g = np.asarray(transitions, dtype=float).copy()
    m = p.size
    active = np.ones(m, dtype=bool)
    adjusted = np.ones(m)
    running = 0.0
    for _ in range(m):
        with np.errstate(divide="ignore"):
            ratio = np.where(active & (w > 0), p / np.where(w > 0, w, 1), np.inf)
        j = int(np.argmin(ratio))
        if not np.isfinite(ratio[j]):
            break  # what is left carries no weight: never rejected
        running = max(running, float(ratio[j]))
        adjusted[j] = min(1.0, running)
        active[j] = False
        # Pass j's weight on, and rewire the graph around j (Bretz et al. 2009,
        # Algorithm 1).
        new_w = w + w[j] * g[j]
        new_g = np.zeros_like(g)
        for a in np.flatnonzero(active):
            for b in np.flatnonzero(active):
                if a == b:
                    continue
                denominator = 1 - g[a, j] * g[j, a]
                if denominator > 0:
                    new_g[a, b] = (g[a, b] + g[a, j] * g[j, b]) / denominator
        w = np.where(active, new_w, 0.0)
        g = new_g
    return adjusted


def confirmatory_graph(n_counts: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights and transitions of the two fixed sequences (source, target).

    Hypotheses are ordered source at counts largest..smallest, then target at
    counts largest..smallest. Each sequence starts with alpha/2 at its largest
    count; a rejection passes everything to the next smaller count; the smallest
    count passes to the other sequence's largest count.
    """
    if n_counts < 1:
        raise SweepError("the confirmatory family needs at least one count")
    m = 2 * n_counts
    weights = np.zeros(m)
    weights[0] = weights[n_counts] = 0.5
    g = np.zeros((m, m))
    for start, other in ((0, n_counts), (n_counts, 0)):
        for i in range(n_counts - 1):
            g[start + i, start + i + 1] = 1.0
        g[start + n_counts - 1, other] = 1.0
    return weights, g


def confirmatory_adjusted(
    source_p: np.ndarray, target_p: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Adjusted p-values of the confirmatory procedure.

    Args:
      source_p: (C,) p-values of the source class at ascending counts.
      target_p: (C,) the target class, same counts.

    Returns:
      (source_adjusted (C,), target_adjusted (C,)), ascending counts.
    """
    source_p, target_p = np.asarray(source_p), np.asarray(target_p)
    n = source_p.size
    weights, g = confirmatory_graph(n)
    p = np.concatenate([source_p[::-1], target_p[::-1]])
    adjusted = graphical_adjusted(p, weights, g)
    return adjusted[:n][::-1], adjusted[n:][::-1]


def smallest_effective_count(
    summary, class_id: int, *, alpha: float = 0.05
) -> int | None:
    """Smallest count the confirmatory procedure declares effective on a class.

    Args:
      summary: a `summarize` table (its p_adjusted column).
      class_id: a confirmatory class (source or target).
      alpha: familywise error rate.

    Returns:
      The count, or None when not even the largest count is declared.
    """
    rows = summary[
        (summary["class_id"] == class_id) & (summary["family"] == CONFIRMATORY)
    ]
    if not len(rows):
        raise SweepError(f"class {class_id} is not in the confirmatory family")
    hit = rows[rows["p_adjusted"] <= alpha]
    return int(hit["count"].min()) if len(hit) else None


def sequence_stop_note(summary, class_id: int, *, alpha: float = 0.05) -> str | None:
    """Why a confirmatory class has no effective count, when that is because
    its largest count is not declared (the fixed sequence stops there).

    Args:
      summary: a `summarize` table (p_adjusted, p_value columns).
      class_id: a confirmatory class.
      alpha: familywise error rate.

    Returns:
      One line (no class name, no final period), or None when the class has an
      effective count or no confirmatory rows.
    """
    rows = summary[
        (summary["class_id"] == class_id) & (summary["family"] == CONFIRMATORY)
    ].sort_values("count")
    if not len(rows) or (rows["p_adjusted"] <= alpha).any():
        return None
    top = rows.iloc[-1]
    state = (
        "has no p-value"
        if top["p_adjusted"] != top["p_adjusted"]
        else f"is not significant (adjusted p {top['p_adjusted']:.3g})"
    )
    note = f"the largest count's effect ({int(top['count'])}) {state}, so the "
    if len(rows) == 1:
        return note + "fixed sequence declares nothing"
    note += "fixed sequence stops there; smaller counts are not tested confirmatorily"
    small = rows.iloc[:-1]
    small = small[small["p_value"] <= alpha]
    if len(small):
        best = small.loc[small["p_value"].idxmin()]
        note += (
            f" (count {int(best['count'])} alone: p {best['p_value']:.3g}, "
            "not a confirmed finding)"
        )
    return note
