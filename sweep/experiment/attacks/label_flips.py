"""Label-flip poisoning: pure functions from clean labels to poisoned ones.

Selections are nested by construction: every count takes a prefix of one ordering
of the source class, so the images flipped at N=5 include those flipped at N=1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sweep.errors import SweepError
from sweep.experiment.config import parse_counts


def resolve_counts(specs: Sequence[str], *, available: int) -> tuple[int, ...]:
    """Absolute counts, 0 first, from specs like "50" or "5%" of `available`.

    Args:
      specs: count specs as given on the command line.
      available: how many images can be flipped (the source class size, or for
        a swap the smaller of the two classes).
    Returns:
      Sorted distinct counts, always starting with 0 (the clean twin).
    """
    counts = []
    for spec, (value, percent) in zip(specs, parse_counts(tuple(specs))):
        n = int(round(value / 100 * available)) if percent else int(value)
        if n > available:
            raise SweepError(
                f"count {spec} asks for {n} flips but only {available} images "
                "of the source class can be flipped"
            )
        counts.append(n)
    positive = [n for n in counts if n > 0]
    if len(set(positive)) != len(positive):
        raise SweepError(
            f"--counts {','.join(specs)} name the same number of flips twice "
            f"(resolved: {','.join(map(str, counts))})"
        )
    return (0, *sorted(set(positive)))


def selection_order(
    labels: np.ndarray, class_id: int, *, selection: str, rng: np.random.Generator
) -> np.ndarray:
    """Indices of `class_id` images in the order they get flipped."""
    members = np.flatnonzero(labels == class_id)
    if selection == "first":
        return members
    return rng.permutation(members)


def poison_rng(poison_seed: int, training_seed: int | None) -> np.random.Generator:
    """The draw behind a random selection: shared, or one per training seed."""
    if training_seed is None:
        return np.random.default_rng(poison_seed)
    return np.random.default_rng([poison_seed, training_seed])


def poison_labels(
    labels: np.ndarray,
    *,
    source: int,
    target: int,
    count: int,
    strategy: str = "flip",
    selection: str = "random",
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Flip `count` source labels to target (and, for swap, `count` back).

    The generator is consumed identically whatever the count, so calls with the
    same seed but different counts take nested prefixes of one ordering.

    Returns:
      (poisoned labels (N,), flipped indices: source->target first, then for
      swap the target->source ones).
    """
    if source == target:
        raise SweepError("source and target are the same class")
    src_order = selection_order(labels, source, selection=selection, rng=rng)
    tgt_order = selection_order(labels, target, selection=selection, rng=rng)
    limit = len(src_order) if strategy == "flip" else min(len(src_order), len(tgt_order))
    if count > limit:
        raise SweepError(f"cannot flip {count} labels: only {limit} are available")
    poisoned = np.array(labels, copy=True)
    flipped = src_order[:count]
    poisoned[flipped] = target
    if strategy == "swap":
        back = tgt_order[:count]
        poisoned[back] = source
        flipped = np.concatenate([flipped, back])
    return poisoned, flipped


def flippable(labels: np.ndarray, *, source: int, target: int, strategy: str) -> int:
    """How many flips a count may ask for."""
    n_src = int(np.sum(labels == source))
    if strategy == "swap":
        return min(n_src, int(np.sum(labels == target)))
    return n_src
