"""The attack matrix's pairs (`--pairs`): parsed, then resolved to class ids.

A matrix sweep's replicas, per seed: one clean replica (count 0), then for every
pair its poisoned replicas at every positive count. Keys depend on the seed only
(paired), so each pair's poisoned replica is the twin of that one clean replica,
exactly as in a one-pair sweep; P pairs cost 1 + P x (counts) replicas per seed
instead of P x (1 + counts).

How a matrix's tables are laid out and summarized per pair: `sweep.stats.pair_tables`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sweep.data.classes import resolve_class
from sweep.errors import SweepError
from sweep.experiment.config import parse_pairs


def resolve_pairs(
    specs: Sequence[str] | None, source: str, target: str, class_names: Sequence[str]
) -> tuple[tuple[int, int], ...]:
    """Class-id pairs in the order given (`all`: every ordered pair, source-major).

    None is the one pair `source -> target` (a plain sweep).
    """
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
