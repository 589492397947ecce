"""K-fold splits of the training set as per-replica training subsets.

A fold replica trains on every image outside its fold and predicts the images
inside it, so every image gets exactly one out-of-fold prediction per seed.
"""

from __future__ import annotations

import numpy as np

from sweep.engine.spec import Subsets


def assign_folds(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold id (N,) int32 of every image: a random split into k near-equal folds."""
    folds = np.empty(n, np.int32)
    folds[rng.permutation(n)] = np.arange(n) % k
    return folds


def fold_rng(fold_seed: int, training_seed: int) -> np.random.Generator:
    """Each training seed splits the data its own way (diverse ensembles)."""
    return np.random.default_rng([fold_seed, training_seed, 0xF01D])


def training_subsets(folds: np.ndarray, k: int) -> Subsets:
    """Subsets (K, M) for the k fold replicas: fold j's replica trains off fold j.

    M is the largest training-subset size; shorter rows are padded with their
    own first index (never trained on: past `length`).
    """
    rows = [np.flatnonzero(folds != j) for j in range(k)]
    m = max(len(r) for r in rows)
    index = np.stack([np.pad(r, (0, m - len(r)), mode="edge") for r in rows])
    length = np.array([len(r) for r in rows], np.int32)
    return Subsets(index.astype(np.int32), length)


def keep_subsets(keep: np.ndarray) -> Subsets:
    """Subsets (R, N) from a boolean keep mask (R, N): train on kept images only."""
    r, n = keep.shape
    index = np.zeros((r, n), np.int32)
    length = keep.sum(1).astype(np.int32)
    for i in range(r):
        kept = np.flatnonzero(keep[i])
        index[i, : len(kept)] = kept
    return Subsets(index, length)
