"""Class-balanced training subsets (`--train-size`), nested as n grows."""

from __future__ import annotations

import numpy as np

from sweep.errors import SweepError


def balanced_subset(labels: np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """Picks a class-balanced subset of indices.

    Each class present gets n // n_classes indices, the first n % n_classes
    classes (in label order) one more. Within a class the picks are a prefix of
    a permutation seeded by (seed, class), so a larger n contains a smaller one.

    Args:
      labels: (N,) integer labels.
      n: subset size, n_classes <= n <= what the classes can supply.
      seed: non-negative; the same seed gives the same subset.

    Returns:
      (n,) int64 indices into labels, sorted ascending.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise SweepError(
            f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}"
        )
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise SweepError(f"subset size must be an integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise SweepError(f"subset seed must be a non-negative integer, got {seed!r}")
    classes, counts = np.unique(labels, return_counts=True)
    if n < len(classes):
        raise SweepError(
            f"subset size {n} is smaller than the number of classes ({len(classes)})"
        )
    quota = np.full(len(classes), n // len(classes))
    quota[: n % len(classes)] += 1
    short = np.flatnonzero(quota > counts)
    if short.size:
        c = short[0]
        raise SweepError(
            f"subset size {n} needs {quota[c]} images of class {classes[c]}, but "
            f"only {counts[c]} are available"
        )
    picks = []
    for c, q in zip(classes, quota, strict=True):
        members = np.flatnonzero(labels == c)
        rng = np.random.default_rng((int(seed), int(c)))
        picks.append(rng.permutation(members)[:q])
    return np.sort(np.concatenate(picks)).astype(np.int64)
