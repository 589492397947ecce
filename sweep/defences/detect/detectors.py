"""Detectors: a suspicion score (higher = more likely mislabelled) and the
detector's own flag for every training image. Pure NumPy on the host, over
what the engine's out-of-fold models produce.

- `confident_learning`: cleanlab (Northcutt et al., 2021) on out-of-fold
  probabilities; the library, not a rewrite.
- `self_margin`: out-of-fold probability of the given label minus the largest
  other (one seed's OOF models, or the ensemble over seeds).
- `area_under_margin`: Pleiss et al. (2020): the training margin (assigned
  logit minus largest other) averaged over epochs and the models that train on
  the image; flagged below 0 (the paper's threshold samples are not trained).
- `deep_knn`: Peri et al. (2020): label disagreement among the k nearest
  training images in a model's penultimate feature space; flagged when the
  given label is not the neighbours' plurality label.
"""

from __future__ import annotations

import numpy as np

from sweep.errors import SweepError

DETECTORS = ("cleanlab", "margin", "aum", "knn", "ensemble")


def _probs(pred_probs: np.ndarray) -> np.ndarray:
    """Float64 rows that sum to 1 exactly enough for cleanlab's checks."""
    p = np.asarray(pred_probs, np.float64)
    return p / p.sum(1, keepdims=True)


def require_cleanlab():
    try:
        import cleanlab.filter
        import cleanlab.rank
    except ImportError:
        raise SweepError(
            'confident learning needs cleanlab: pip install -e ".[detect]"'
        ) from None
    return cleanlab


def confident_learning(labels: np.ndarray, pred_probs: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """cleanlab on out-of-fold probabilities.

    Args:
      labels: (N,) given (possibly poisoned) labels.
      pred_probs: (N, K) out-of-fold class probabilities, rows in label order.
    Returns:
      (suspicion (N,) = 1 - cleanlab's label quality (self-confidence),
       flag (N,) bool = `find_label_issues` with its default pruning).
    """
    cleanlab = require_cleanlab()
    labels = np.asarray(labels, np.int64)
    p = _probs(pred_probs)
    quality = cleanlab.rank.get_label_quality_scores(labels, p)
    # n_jobs=1: cleanlab's default forks worker processes, and fork() under
    # JAX's threads can deadlock.
    flags = cleanlab.filter.find_label_issues(labels, p, n_jobs=1)
    return 1.0 - np.asarray(quality, float), np.asarray(flags, bool)


def self_margin(labels: np.ndarray, pred_probs: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """(-margin, margin < 0): margin = p[given] - max other p, per image."""
    p = _probs(pred_probs)
    n = len(labels)
    given = p[np.arange(n), labels]
    other = p.copy()
    other[np.arange(n), labels] = -np.inf
    margin = given - other.max(1)
    return -margin, margin < 0


def area_under_margin(margin_sum: np.ndarray, margin_n: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(-AUM, AUM < 0) from summed training margins and how many (model, epoch)
    pairs trained on each image. Images never trained on score NaN."""
    with np.errstate(invalid="ignore", divide="ignore"):
        aum = np.where(margin_n > 0, margin_sum / np.maximum(margin_n, 1), np.nan)
    return -aum, aum < 0


def deep_knn(query_feats: np.ndarray, query_labels: np.ndarray,
             ref_feats: np.ndarray, ref_labels: np.ndarray, *, k: int,
             n_classes: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """k-NN label disagreement in feature space (Euclidean).

    Args:
      query_feats (Q, D), query_labels (Q,): the images scored.
      ref_feats (M, D), ref_labels (M,): the neighbours' pool (the images the
        model trained on; never the queries themselves).
    Returns:
      (suspicion (Q,) = share of the k neighbours whose label differs,
       flag (Q,) = the given label is not the neighbours' plurality label).
    """
    q = np.asarray(query_feats, np.float32)
    r = np.asarray(ref_feats, np.float32)
    k = min(k, len(r))
    r_sq = (r * r).sum(1)
    suspicion = np.empty(len(q))
    flags = np.empty(len(q), bool)
    for start in range(0, len(q), block):
        qb = q[start : start + block]
        d = r_sq[None, :] - 2.0 * qb @ r.T  # + |q|^2, constant per row
        nn = np.argpartition(d, k - 1, axis=1)[:, :k]  # (b, k)
        votes = np.zeros((len(qb), n_classes))
        np.add.at(votes, (np.arange(len(qb))[:, None], ref_labels[nn]), 1.0)
        given = query_labels[start : start + len(qb)]
        agree = votes[np.arange(len(qb)), given]
        suspicion[start : start + len(qb)] = 1.0 - agree / k
        flags[start : start + len(qb)] = agree < votes.max(1)
    return suspicion, flags
