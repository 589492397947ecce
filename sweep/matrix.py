"""The attack matrix: many source -> target pairs sharing one clean twin per seed.

A matrix sweep's replicas, per seed: one clean replica (count 0), then for every
pair its poisoned replicas at every positive count. Keys depend on the seed only
(paired), so each pair's poisoned replica is the twin of that one clean replica,
exactly as in a one-pair sweep; P pairs cost 1 + P x (counts) replicas per seed
instead of P x (1 + counts).

Tables: a matrix's metrics and confusion rows carry `source` and `target` class
ids; the shared clean replicas have source = target = -1 (CLEAN). (A one-pair
sweep's tables keep their old columns; its pair is in the manifest.) The summary
is computed per pair, by `sweep.stats.summarize` on that pair's replicas plus the
shared clean ones, and gains `source` and `target` columns. Each pair's source
and target are its confirmatory classes, so the decision rule (`p_adjusted`,
`significant`) controls the familywise error within each pair, not across the
matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sweep.errors import SweepError

CLEAN = -1  # source/target id of the shared clean replicas


def parse_pairs(specs: Sequence[str]) -> tuple[tuple[str, str], ...] | str:
    """("cat:dog", ...) -> (("cat", "dog"), ...), or "all"; refuses malformed specs."""
    specs = tuple(str(s).strip() for s in specs)
    if not specs or specs == ("",):
        raise SweepError("--pairs is empty; give e.g. --pairs cat:dog,truck:automobile")
    if any(s.lower() == "all" for s in specs):
        if len(specs) > 1:
            raise SweepError("--pairs all cannot be combined with listed pairs")
        return "all"
    pairs = []
    for s in specs:
        parts = [p.strip() for p in s.split(":")]
        if len(parts) != 2 or not all(parts):
            raise SweepError(f"pair {s!r} is not SOURCE:TARGET (e.g. cat:dog)")
        if parts[0].lower() == parts[1].lower():
            raise SweepError(f"pair {s!r} flips a class to itself")
        pairs.append((parts[0], parts[1]))
    return tuple(pairs)


def resolve_pairs(
    specs: Sequence[str] | None, source: str, target: str, class_names: Sequence[str]
) -> tuple[tuple[int, int], ...]:
    """Class-id pairs in the order given (`all`: every ordered pair, source-major).

    None is the one pair `source -> target` (a plain sweep).
    """
    from sweep.poison import resolve_class

    if specs is None:
        named = ((source, target),)
    else:
        named = parse_pairs(specs)
        if named == "all":
            k = len(class_names)
            return tuple((s, t) for s in range(k) for t in range(k) if s != t)
    ids = tuple(
        (resolve_class(s, class_names), resolve_class(t, class_names)) for s, t in named
    )
    for (s, t), (a, b) in zip(ids, named):
        if s == t:
            raise SweepError(f"pair {a}:{b} flips {class_names[s]!r} to itself")
    if len(set(ids)) != len(ids):
        dupes = sorted({f"{class_names[s]}:{class_names[t]}" for s, t in ids
                        if ids.count((s, t)) > 1})
        raise SweepError(f"--pairs repeats {', '.join(dupes)}")
    return ids


def pairs_of(metrics: pd.DataFrame) -> list[tuple[int, int]]:
    """The (source, target) pairs a metrics table holds, in first-seen order."""
    if "source" not in metrics.columns:
        return []
    poisoned = metrics[metrics["source"] != CLEAN]
    pairs = poisoned[["source", "target"]].drop_duplicates()
    return [(int(s), int(t)) for s, t in pairs.to_numpy()]


def is_matrix(metrics: pd.DataFrame) -> bool:
    return len(pairs_of(metrics)) > 1


def pair_slice(metrics: pd.DataFrame, source: int, target: int) -> pd.DataFrame:
    """One pair's replicas plus the shared clean ones: a plain sweep's table."""
    keep = ((metrics["source"] == source) & (metrics["target"] == target)) | (
        metrics["source"] == CLEAN
    )
    return metrics[keep]


def summarize_pairs(metrics: pd.DataFrame, *, summarize, **kwargs) -> pd.DataFrame:
    """`summarize(pair_slice)` for every pair, with `source`/`target` columns first.

    A table without `source` (written before the matrix existed) is one pair,
    summarized whole; its source/target columns are then left out.
    """
    pairs = pairs_of(metrics)
    if not pairs:
        return summarize(metrics, **kwargs)
    frames = []
    for s, t in pairs:
        # Each pair's confirmatory classes are its own source and target.
        part = summarize(pair_slice(metrics, s, t), **{**kwargs, "classes": (s, t)})
        part.insert(0, "target", np.full(len(part), t, np.int16))
        part.insert(0, "source", np.full(len(part), s, np.int16))
        frames.append(part)
    return pd.concat(frames, ignore_index=True)

