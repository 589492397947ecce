"""The metrics table as the statistics see it: checked, one epoch as arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sweep.errors import SweepError
from sweep.results.tables import check_metrics

# The confirmatory classes when the caller names none: the CLI's defaults.
DEFAULT_SOURCE, DEFAULT_TARGET = "cat", "dog"


def check_level(level: float) -> None:
    if not 0 < level < 1:
        raise SweepError(f"--level must be between 0 and 1 (e.g. 0.95), got {level}")


# The analysed epoch as arrays.


@dataclass(frozen=True)
class Design:
    """One epoch of a sweep laid out as arrays.

    accuracy[i] holds count counts[i] (counts[0] == 0, the clean replicas):
      paired: (S, K) seed x class, rows aligned on `seeds` across counts, NaN
        rows where that replica is missing or diverged;
      unpaired: (n_i, K) replica x class, usable replicas only.
    present (C, S) says which paired replicas exist (unpaired: empty).
    n_diverged (C,) counts the diverged replicas of each count.
    """

    paired: bool
    epoch: int
    counts: np.ndarray  # (C,) int, ascending, 0 first
    class_ids: np.ndarray  # (K,) int
    class_names: tuple[str, ...]  # (K,)
    seeds: np.ndarray  # (S,) paired; all seeds seen when unpaired
    accuracy: tuple[np.ndarray, ...]  # (C,) of (S, K) or (n_i, K), percent
    present: np.ndarray  # (C, S) bool, paired only
    n_diverged: np.ndarray  # (C,) int


def design_of(metrics: pd.DataFrame, *, epoch: int | None = None) -> Design:
    """Lay out one epoch (default: the last) of a metrics table as arrays.

    A replica flagged diverged at any epoch is left out at every epoch (its
    earlier numbers come from a run that went on to fail), as is one whose
    accuracy at `epoch` is not finite.
    """
    check_metrics(metrics)
    epochs = np.sort(metrics["epoch"].unique())
    if epoch is None:
        epoch = int(epochs[-1])
    elif epoch not in set(epochs.tolist()):
        raise SweepError(
            f"epoch {epoch} is not in the results (epochs {epochs[0]}-{epochs[-1]})"
        )
    table = metrics[metrics["epoch"] == epoch]
    flagged = metrics.groupby("replica")["diverged"].any()
    accuracy = table.pivot(index="replica", columns="class_id", values="accuracy")
    accuracy = accuracy.sort_index(axis=1)
    class_ids = accuracy.columns.to_numpy(dtype=int)
    names = table.drop_duplicates("class_id").set_index("class_id")["class_name"]
    replicas = table.drop_duplicates("replica").set_index("replica")
    replicas = replicas.loc[accuracy.index, ["count", "seed"]]
    values = accuracy.to_numpy(dtype=float)  # (R, K)
    flags = flagged.reindex(accuracy.index, fill_value=False).to_numpy(dtype=bool)
    bad = flags | ~np.isfinite(values).all(axis=1)
    counts = np.sort(replicas["count"].unique()).astype(int)
    count_of = replicas["count"].to_numpy(dtype=int)
    seed_of = replicas["seed"].to_numpy(dtype=int)
    seeds = np.sort(np.unique(seed_of))
    paired = bool(table["paired"].iloc[0])
    n_diverged = np.array([int(bad[count_of == c].sum()) for c in counts])
    if paired:
        column = np.searchsorted(seeds, seed_of)
        grids, present = [], np.zeros((counts.size, seeds.size), dtype=bool)
        for i, c in enumerate(counts):
            grid = np.full((seeds.size, class_ids.size), np.nan)
            rows = count_of == c
            present[i, column[rows]] = True
            keep = rows & ~bad
            grid[column[keep]] = values[keep]
            grids.append(grid)
        groups = tuple(grids)
    else:
        present = np.zeros((counts.size, 0), dtype=bool)
        groups = tuple(values[(count_of == c) & ~bad] for c in counts)
    return Design(
        paired=paired,
        epoch=int(epoch),
        counts=counts,
        class_ids=class_ids,
        class_names=tuple(str(names[k]) for k in class_ids),
        seeds=seeds,
        accuracy=groups,
        present=present,
        n_diverged=n_diverged,
    )


def classes_of(manifest: dict) -> tuple[int | None, int] | None:
    """The sweep's (source, target) class ids from its manifest, or None (the
    defaults) for manifests that do not record them. An all-to-one backdoor
    records source -1: (None, target)."""
    source, target = manifest.get("source_id"), manifest.get("target_id")
    if source is None or target is None:
        return None
    return (None if int(source) < 0 else int(source)), int(target)


def class_index(design: Design, class_id: int) -> int:
    """Column of `class_id` in the design's (S, K) arrays."""
    where = np.flatnonzero(design.class_ids == class_id)
    if where.size == 0:
        raise SweepError(f"class {class_id} is not in the results")
    return int(where[0])


def resolve_class(design: Design, name_or_id: int | str) -> int:
    """A class id from an id or a name of the results' classes."""
    if isinstance(name_or_id, str) and not name_or_id.isdigit():
        if name_or_id not in design.class_names:
            raise SweepError(
                f"class {name_or_id!r} is not in the results "
                f"({', '.join(design.class_names)})"
            )
        return int(design.class_ids[design.class_names.index(name_or_id)])
    class_id = int(name_or_id)
    class_index(design, class_id)
    return class_id


def paired_table(design: Design, k: int) -> np.ndarray:
    """(S, C) accuracy of class column k per seed x count; NaN where left out."""
    return np.stack([group[:, k] for group in design.accuracy], axis=1)
