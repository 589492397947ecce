"""The ensemble's vote and its certified radius: DPA, Finite Aggregation, Run-Off.

Input: the base models' test outputs, model axis first. `votes` (K, n) are
class ids; `scores` (K, n, C) are logits for Run-Off Election, which needs each
model's preference between two classes. A model prefers a to b if its score of
a is higher, ties to the smaller class index, the same rule as its vote
(argmax, first maximum) and as every tie in the ensemble. N_c below is the
number of models voting c, and [P] is 1 if P holds, else 0.

Radius r: no poisoning of r training images changes the prediction. Threat
model: insertions, deletions and label flips of training images, any mix. A
model's training set is its buckets (`partition`), chosen by a hash of the
image's bytes, so each such change touches one bucket; a label flip counts as
ONE (the papers count |D - D'| + |D' - D|, in which a flip is a deletion plus an
insertion, 2, but both land in the same bucket). Changing an image's pixels
counts 2 (old and new bytes hash apart). This assumes every base model is a
deterministic function of its buckets' contents.

"Cert" below is a lower bound on the buckets an attacker must touch to change
the prediction; radius = Cert - 1. For a gap g the attacker must close and the
most pw_b one touched bucket b can cut from it, Cert1(pw, g) = the fewest
buckets whose largest powers sum to at least g (0 if g <= 0).

References: Levine & Feizi, "Deep Partition Aggregation", ICLR 2021, Theorem 1;
Wang, Levine & Feizi, "Improved Certified Defenses against Data Poisoning with
(Deterministic) Finite Aggregation", ICML 2022, its certificate theorem, and
code wangwenxiao/FiniteAggregation (FiniteAggregation_cerfity.py); Rezaei,
Banihashem, Chegini & Feizi, "Run-Off Election", ICML 2023, its DPA+ROE and
FA+ROE certificates, and code k1rezaei/DPA-election (dpa_roe_certify.py,
fa_roe_certify.py: Cert_R1, Cert_R2, Cert_v1, Cert_v2). Equations are written
out at each function; the tests hold each to a literal transcription and to
an exhaustive attacker.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from sweep.errors import SweepError

_CHUNK = 1 << 22  # integers per working array, to bound memory over test images
_NEVER = np.iinfo(np.int64).max // 4  # the cost of a case that cannot happen


class Certified(NamedTuple):
    """Per test image: the ensemble's answer and how far it is certified."""

    prediction: np.ndarray  # (n,) int64 the ensemble's class
    runner_up: np.ndarray  # (n,) int64 the other class of the deciding round
    margin: np.ndarray  # (n,) int64 votes for prediction minus for runner_up, >= 0
    radius: np.ndarray  # (n,) int64 poisoned training images certified, >= 0


def vote_counts(votes: np.ndarray, num_classes: int) -> np.ndarray:
    """N_c: (K, n) class ids -> (n, C) int64 number of models voting each class."""
    votes = np.asarray(votes)
    if votes.ndim != 2 or votes.dtype.kind not in "iu":
        raise SweepError(f"votes must be (models, test images) integers, got "
                         f"{votes.dtype} {votes.shape}")
    if num_classes < 2 or votes.size and (votes.min() < 0
                                          or votes.max() >= num_classes):
        raise SweepError(f"votes must be class ids in [0, {num_classes}), C >= 2")
    n = votes.shape[1]
    flat = (np.arange(n)[None, :] * num_classes + votes).ravel()
    return np.bincount(flat, minlength=n * num_classes).reshape(n, num_classes)


def plurality(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The plurality class and the runner-up, ties to the smaller index (DPA).

    Returns:
      (prediction (n,), runner_up (n,)): the first two classes when sorted by
      count, descending, then index. The runner-up maximises N_c + [c < pred],
      the class closest to taking the prediction.
    """
    pred = counts.argmax(-1)
    others = np.where(np.arange(counts.shape[-1]) == pred[:, None], -1, counts)
    return pred, others.argmax(-1)


def _at(a: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """a[i, cls[i]] for a (n, C) and cls (n,): (n, 1)."""
    return np.take_along_axis(a, cls[:, None], axis=1)


def _gap(counts: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(n, C) N_x - N_c + [c > x]: net votes class c must gain on class x to
    rank above it (c wins a tie only if c < x); <= 0 where it already does."""
    above = np.arange(counts.shape[-1]) > x[:, None]
    return _at(counts, x) - counts + above


def _cert1(powers: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """Cert1: the fewest buckets whose largest powers sum to at least gap.

    powers (..., B) int >= 0, gap (...) int -> (...) int64 in [0, B + 1];
    0 where gap <= 0, B + 1 where even all buckets fall short.
    """
    # Powers are small: a contiguous int16 sort and an int32 sum run several
    # times faster than int64 ones.
    top = int(powers.max(initial=0))
    small = np.int16 if top < 2**15 else np.int64
    total = np.int32 if top * powers.shape[-1] < 2**31 else np.int64
    ranked = np.sort(np.ascontiguousarray(powers, dtype=small), axis=-1)[..., ::-1]
    reach = np.cumsum(ranked, axis=-1, dtype=total)  # (..., B)
    need = 1 + (reach < gap[..., None]).sum(-1)
    return np.where(gap > 0, need, 0)


def _ceil_half(g: np.ndarray) -> np.ndarray:
    return (np.maximum(g, 0) + 1) // 2


def dpa_certify(votes: np.ndarray, *, num_classes: int) -> Certified:
    """Deep Partition Aggregation: plurality of k models on disjoint partitions.

    Levine & Feizi (2021), Theorem 1: with c the prediction,
      radius = floor((N_c - max_{c' != c} (N_c' + [c' < c])) / 2),
    which is tight: r + 1 models switching from c to the runner-up flip it.

    Args:
      votes: (k, n) class ids, model i trained on partition i.
      num_classes: C.
    """
    counts = vote_counts(votes, num_classes)
    pred, runner = plurality(counts)
    margin = (_at(counts, pred) - _at(counts, runner))[:, 0]
    return Certified(pred, runner, margin, (margin - (runner < pred)) // 2)


def _check_shifts(shifts, n_models: int) -> np.ndarray:
    shifts = np.asarray(shifts, np.int64)
    if (shifts.ndim != 1 or not 1 <= len(shifts) <= n_models
            or len(np.unique(shifts % n_models)) != len(shifts)):
        raise SweepError(f"shifts must be d distinct ints for {n_models} models, "
                         f"got {shifts.tolist()}")
    return shifts


def _spread(per_model: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """(..., K) -> (..., B = K) int16: out[..., b] = sum_j per_model[..., b + s_j
    mod K], a sum over the d models bucket b reaches (at most d < 2**15)."""
    out = np.zeros(per_model.shape, np.int16)
    for s in shifts:
        out += np.roll(per_model, -int(s), axis=-1)
    return out


def _held(votes: np.ndarray, shifts: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, m) votes -> (m, C, B) models of bucket b that vote c."""
    return _spread(votes.T[:, None, :] == np.arange(num_classes)[:, None], shifts)


def _chunks(n: int, per_image: int):
    step = max(1, _CHUNK // max(per_image, 1))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def fa_certify(votes: np.ndarray, *, shifts: np.ndarray, num_classes: int) -> Certified:
    """Finite Aggregation: plurality of kd models, each on d of kd buckets.

    Wang, Levine & Feizi (2022): model i trains on the buckets b with
    i in h_spr(b) = {(b + s_j) mod kd}. With c the prediction and, for every
    c' != c and bucket b, the poisoning power
      pw_b(c') = sum_{i in h_spr(b)} ([f_i = c] + [f_i != c'])
    (a touched bucket can at most turn its d models from c to c'), the
    prediction is certified at r if for all c' != c the sum of the r largest
    pw_b(c') is at most N_c - N_c' - [c' < c]. So radius = min_c' Cert1(pw(c'),
    N_c - N_c' + [c' > c]) - 1. A sufficient condition: buckets sharing a model
    each count it, so for d > 1 it may understate the radius; d = 1 is DPA.

    Args:
      votes: (k*d, n) class ids, model i as above.
      shifts: (d,) the spreading shifts (`partition.spread_shifts`).
      num_classes: C.
    """
    counts = vote_counts(votes, num_classes)
    shifts = _check_shifts(shifts, votes.shape[0])
    pred, runner = plurality(counts)
    is_pred = np.arange(num_classes) == pred[:, None]  # (n, C)
    radius = np.empty(len(pred), np.int64)
    for sl in _chunks(len(pred), votes.shape[0] * num_classes):
        held = _held(votes[:, sl], shifts, num_classes)  # (m, C, B)
        held_pred = np.take_along_axis(held, pred[sl, None, None], axis=1)
        need = _cert1(len(shifts) + held_pred - held, _gap(counts[sl], pred[sl]))
        radius[sl] = np.where(is_pred[sl], _NEVER, need).min(-1) - 1
    margin = (_at(counts, pred) - _at(counts, runner))[:, 0]
    return Certified(pred, runner, margin, radius)


def _check_scores(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 3 or scores.shape[2] < 2 or scores.dtype.kind not in "fiu":
        raise SweepError(f"scores must be (models, test images, classes >= 2) "
                         f"numbers, got {scores.dtype} {scores.shape}")
    if scores.dtype.kind == "f" and not np.isfinite(scores).all():
        raise SweepError("scores must be finite")
    return scores


def _prefers(scores: np.ndarray, a: np.ndarray) -> np.ndarray:
    """(K, m, C) scores, a (m,) -> (m, C, K) bool: model prefers class a to c,
    an equal score going to the smaller class."""
    sa = np.take_along_axis(scores, a[None, :, None], axis=2)  # (K, m, 1)
    smaller = a[None, :, None] < np.arange(scores.shape[2])
    return ((sa > scores) | ((sa == scores) & smaller)).transpose(1, 2, 0)


def _run_off(scores: np.ndarray):
    """(votes (K, n), counts (n, C), prediction, other finalist, margin)."""
    scores = _check_scores(scores)
    votes = scores.argmax(-1)  # (K, n) first maximum: the smaller class
    counts = vote_counts(votes, scores.shape[2])
    m1, m2 = plurality(counts)
    s1 = np.take_along_axis(scores, m1[None, :, None], axis=2)[..., 0]  # (K, n)
    s2 = np.take_along_axis(scores, m2[None, :, None], axis=2)[..., 0]
    for_m1 = (s1 > s2) | ((s1 == s2) & (m1 < m2))
    lead = 2 * for_m1.sum(0) - scores.shape[0]  # (n,) M(m1, m2)
    m1_wins = (lead > 0) | ((lead == 0) & (m1 < m2))
    pred, second = np.where(m1_wins, m1, m2), np.where(m1_wins, m2, m1)
    return votes, counts, pred, second, np.abs(lead)


def run_off(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-Off Election's two-round vote (Rezaei et al. 2023).

    Round 1: every model votes its top class; the two first classes by count
    (ties to the smaller index) go through. Round 2: every model votes for the
    finalist it prefers; the majority wins, a tie to the smaller index.

    Args:
      scores: (K, n, C) every model's logits (any monotone score).

    Returns:
      (prediction (n,), other finalist (n,), round-2 margin (n,) >= 0: models
      preferring the prediction minus those preferring the other finalist).
    """
    return _run_off(scores)[2:]


def _lead_gap(prefers: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """e_c = M(p, c) + [c > p] (m, C) from prefers (m, C, K): the net models
    that must switch to c for c to beat p in round 2."""
    c = np.arange(prefers.shape[1])
    return 2 * prefers.sum(-1) - prefers.shape[-1] + (c > pred[:, None])


def roe_dpa_certify(scores: np.ndarray) -> Certified:
    """DPA+ROE: Run-Off Election over k models on disjoint partitions.

    Rezaei et al. (2023), with p the prediction, s the other
    finalist, g_c = N_p - N_c + [c > p], h_c = N_s - N_c + [c > s] and
    e_c = M(p, c) + [c > p] (M: models preferring p to c minus the converse):
    each changed model cuts g_c or h_c by at most 2, g_c1 + g_c2 by at most 3
    and e_c by 2. Then Cert = min(Cert_R1, Cert_R2), radius = Cert - 1, with
      Cert_R1 = min_{c1 != c2, both != p} Cert_v2(g_c1, g_c2)  (p out in round 1)
      Cert_v2(a, b) = max(ceil(a/2), ceil(b/2), ceil((a + b)/3)),
    the closed form of the paper's dynamic programme (fewest models with x
    turned p->c1 and y turned p->c2: 2x + y >= a, x + 2y >= b), and
      Cert_R2 = min_{c != p} max(ceil(h_c/2), ceil(e_c/2))  (c beats p in round 2
    after reaching it: c must rank above s in round 1, h_s = 0).
    ceil of a negative gap is 0. The minimum over pairs is at the two smallest
    g_c, as Cert_v2 grows in both. With C = 2 there is no Cert_R1.

    Args:
      scores: (k, n, C) logits, model i trained on partition i.
    """
    votes, counts, pred, second, margin = _run_off(scores)
    k, n, num_classes = scores.shape
    is_pred = np.arange(num_classes) == pred[:, None]  # (n, C)
    radius = np.empty(n, np.int64)
    for sl in _chunks(n, k * num_classes):
        e = _lead_gap(_prefers(scores[:, sl], pred[sl]), pred[sl])
        h = _gap(counts[sl], second[sl])
        r2 = np.maximum(_ceil_half(h), _ceil_half(e))
        cert = np.where(is_pred[sl], _NEVER, r2).min(-1)
        if num_classes > 2:
            g = np.where(is_pred[sl], _NEVER, _gap(counts[sl], pred[sl]))
            g1, g2 = np.sort(g, axis=-1)[:, :2].T
            v2 = np.maximum(np.maximum(_ceil_half(g1), _ceil_half(g2)),
                            (np.maximum(g1 + g2, 0) + 2) // 3)
            cert = np.minimum(cert, v2)
        radius[sl] = cert - 1
    return Certified(pred, second, margin, radius)


def roe_fa_certify(scores: np.ndarray, *, shifts: np.ndarray) -> Certified:
    """FA+ROE: Run-Off Election over kd models, each on d of kd buckets.

    Rezaei et al. (2023), FA version: the same cases as
    `roe_dpa_certify`, each counted in buckets with FA's powers, a bucket b
    reaching models h_spr(b) (sums below run over i in h_spr(b)):
      Cert_v1(x, c) = Cert1(sum (1 + [f_i = x] - [f_i = c]), N_x - N_c + [c > x]),
      Cert_v2(c1, c2) = max(Cert_v1(p, c1), Cert_v1(p, c2), Cert1(
          sum (1 + 2[f_i = p] - [f_i = c1] - [f_i = c2]), g_c1 + g_c2)),
      Cert_R1 = min_{c1 != c2, both != p} Cert_v2(c1, c2),
      Cert_R2 = min_{c != p} max(Cert_v1(s, c),
                                 Cert1(2 sum [i prefers p to c], e_c)),
    radius = min(Cert_R1, Cert_R2) - 1. The pair gap is not clipped at 0 (a
    class already above p leaves slack the attacker may spend). Cost per test
    image: C(C-1)/2 + 3C sorts of kd powers, after O(d kd C) sums.

    Args:
      scores: (k*d, n, C) logits, model i as in `fa_certify`.
      shifts: (d,) the spreading shifts.
    """
    votes, counts, pred, second, margin = _run_off(scores)
    n_models, n, num_classes = scores.shape
    shifts = _check_shifts(shifts, n_models)
    d = len(shifts)
    c1, c2 = np.triu_indices(num_classes, 1)  # (P,) every pair once
    is_pred = np.arange(num_classes) == pred[:, None]  # (n, C)
    has_pred = (c1 == pred[:, None]) | (c2 == pred[:, None])  # (n, P)
    radius = np.empty(n, np.int64)
    for sl in _chunks(n, n_models * (len(c1) + 2 * num_classes)):
        held = _held(votes[:, sl], shifts, num_classes)  # (m, C, B)
        held_p = np.take_along_axis(held, pred[sl, None, None], axis=1)  # (m, 1, B)
        held_s = np.take_along_axis(held, second[sl, None, None], axis=1)
        g = _gap(counts[sl], pred[sl])  # (m, C)
        v1_p = _cert1(d + held_p - held, g)
        v1_s = _cert1(d + held_s - held, _gap(counts[sl], second[sl]))
        pair = _cert1(d + 2 * held_p - held[:, c1] - held[:, c2], g[:, c1] + g[:, c2])
        v2 = np.maximum(np.maximum(v1_p[:, c1], v1_p[:, c2]), pair)  # (m, P)
        r1 = np.where(has_pred[sl], _NEVER, v2).min(-1)
        prefers = _prefers(scores[:, sl], pred[sl])  # (m, C, K)
        round2 = _cert1(2 * _spread(prefers, shifts), _lead_gap(prefers, pred[sl]))
        r2 = np.where(is_pred[sl], _NEVER, np.maximum(v1_s, round2)).min(-1)
        radius[sl] = np.minimum(r1, r2) - 1
    return Certified(pred, second, margin, radius)
