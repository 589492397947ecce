"""The tidy tables of a results folder: their rows built from a chunk, and checked.

One row per replica x epoch x class (metrics) and per replica x epoch x true x
predicted class (confusion); the poisoned sets as count (x seed) -> indices.
Column names and dtypes are the results' schema (results/README.md).

A trigger backdoor's metrics carry five more columns (a label-flip sweep's
table is unchanged): per class, `stamped_correct` and `stamped_to_target` (the
class's test images, trigger stamped on every one, predicted as their class /
as the target); per replica and epoch, repeated on its class rows like
`test_accuracy`, `asr` (percent of the attack's stamped test images predicted
as the target: images of every class but the target, or of the source class
for a source-specific attack), `robust_accuracy` (percent of the same images
predicted as their true class) and `n_stamped` (how many images that is).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sweep.errors import SweepError

# source/target class id of the clean replicas an attack matrix's pairs share.
CLEAN = -1

# The columns the statistics need in metrics.parquet.
METRIC_COLUMNS = (
    "replica",
    "count",
    "seed",
    "paired",
    "epoch",
    "class_id",
    "class_name",
    "accuracy",
    "diverged",
)


def chunk_frames(
    *,
    replicas: Sequence[int],
    counts: Sequence[int],
    seeds: Sequence[int],
    paired: bool,
    class_names: Sequence[str],
    history: Sequence,
    sources: Sequence[int] | None = None,
    targets: Sequence[int] | None = None,
    backdoor: tuple[int, int | None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tidy metrics and confusion tables for one chunk's epochs.

    Args:
      replicas, counts, seeds: per replica of the chunk (R,).
      history: one `engine.EpochMetrics` per epoch, arrays over the same R.
      sources, targets: class ids of each replica's poisoned pair (R,), -1 for
        a clean replica (`CLEAN`); None leaves the columns out.
      backdoor: (target, source or None for all-to-one) of a trigger backdoor,
        whose history carries `stamped_confusion`: adds the stamped columns
        (module doc, `attack_success`); None leaves them out.
    """
    r = len(replicas)
    k = len(class_names)
    metric_frames, confusion_frames = [], []
    for epoch, m in enumerate(history, start=1):
        conf = np.asarray(m.confusion)[:r]  # (R, K, K)
        n = conf.sum(-1)  # (R, K) test images per true class
        correct = np.einsum("rkk->rk", conf)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(n > 0, 100.0 * correct / np.maximum(n, 1), np.nan)
        per_replica = {
            "replica": np.repeat(replicas, k),
            "count": np.repeat(counts, k),
            "seed": np.repeat(seeds, k),
            "paired": np.full(r * k, paired),
            "epoch": np.full(r * k, epoch),
            "class_id": np.tile(np.arange(k), r),
            "class_name": np.tile(np.asarray(class_names, dtype=object), r),
            "correct": correct.reshape(-1),
            "n": n.reshape(-1),
            "accuracy": acc.reshape(-1),
            "train_loss": np.repeat(np.asarray(m.train_loss)[:r], k),
            "train_accuracy": np.repeat(np.asarray(m.train_accuracy)[:r], k),
            "test_loss": np.repeat(np.asarray(m.test_loss)[:r], k),
            "test_accuracy": np.repeat(
                100.0 * correct.sum(-1) / np.maximum(n.sum(-1), 1), k
            ),
        }
        if backdoor is not None:
            per_replica.update(stamped_columns(m.stamped_confusion, r, *backdoor))
        metric_frames.append(pd.DataFrame(per_replica))
        t, p = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
        confusion_frames.append(
            pd.DataFrame(
                {
                    "replica": np.repeat(replicas, k * k),
                    "count": np.repeat(counts, k * k),
                    "seed": np.repeat(seeds, k * k),
                    "epoch": np.full(r * k * k, epoch),
                    "true_id": np.tile(t.reshape(-1), r),
                    "pred_id": np.tile(p.reshape(-1), r),
                    "n": conf.reshape(-1),
                }
            )
        )
    metrics = pd.concat(metric_frames, ignore_index=True)
    # A replica whose loss ever went non-finite diverged; its rows are kept but
    # flagged so statistics can leave it out.
    bad = metrics.groupby("replica")["train_loss"].transform(
        lambda s: not np.isfinite(s.to_numpy()).all()
    )
    metrics["diverged"] = bad.astype(bool)
    metrics = metrics.astype(
        {"replica": "int32", "count": "int32", "seed": "int32", "epoch": "int16",
         "class_id": "int16", "correct": "int32", "n": "int32"}
    )
    if backdoor is not None:
        metrics = metrics.astype({c: "int32" for c in STAMPED_COUNTS})
    confusion = pd.concat(confusion_frames, ignore_index=True).astype(
        {"replica": "int32", "count": "int32", "seed": "int32", "epoch": "int16",
         "true_id": "int16", "pred_id": "int16", "n": "int32"}
    )
    if sources is not None:  # rows are epoch-major, then replica, then class(es)
        for name, ids in (("source", sources), ("target", targets)):
            ids = np.asarray(ids, np.int16)
            metrics[name] = np.tile(np.repeat(ids, k), len(history))
            confusion[name] = np.tile(np.repeat(ids, k * k), len(history))
    return metrics, confusion


# A trigger backdoor's integer columns (see the module doc).
STAMPED_COUNTS = ("stamped_correct", "stamped_to_target", "n_stamped")


def attack_success(
    stamped: np.ndarray, *, target: int, source: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Attack success rate and robust accuracy from the stamped test confusion.

    Args:
      stamped: (R, K, K) counts of the test set with the trigger on every
        image, [true, predicted].
      target: the backdoor's target class.
      source: a source-specific attack's source class; None: every class but
        the target (all-to-one). The target's own images never count: the
        trigger cannot move them to where they already are.
    Returns:
      (asr (R,) percent predicted as the target, robust_accuracy (R,) percent
      predicted as their true class, n (R,) the stamped images both are over);
      NaN where n is 0.
    """
    stamped = np.asarray(stamped)
    k = stamped.shape[-1]
    classes = np.arange(k)
    eligible = classes != target if source is None else classes == source
    n = stamped[:, eligible].sum((1, 2))  # (R,)
    to_target = stamped[:, eligible, target].sum(1)
    correct = np.einsum("rkk->rk", stamped)[:, eligible].sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        asr = np.where(n > 0, 100.0 * to_target / np.maximum(n, 1), np.nan)
        robust = np.where(n > 0, 100.0 * correct / np.maximum(n, 1), np.nan)
    return asr, robust, n


def stamped_columns(stamped: np.ndarray, r: int, target: int,
                    source: int | None) -> dict[str, np.ndarray]:
    """The backdoor columns of one epoch's metrics rows (R x K, class-minor)."""
    stamped = np.asarray(stamped)[:r]  # (R, K, K)
    k = stamped.shape[-1]
    asr, robust, n = attack_success(stamped, target=target, source=source)
    return {
        "stamped_correct": np.einsum("rkk->rk", stamped).reshape(-1),
        "stamped_to_target": stamped[:, :, target].reshape(-1),
        "asr": np.repeat(asr, k),
        "robust_accuracy": np.repeat(robust, k),
        "n_stamped": np.repeat(n, k),
    }


def poisoned_frame(
    flipped: dict[tuple[int, int], np.ndarray], old_labels: np.ndarray,
    new_labels: dict[tuple[int, int], np.ndarray],
) -> pd.DataFrame:
    """count (x seed) -> flipped indices; seed -1 means shared by every seed."""
    rows = []
    for (count, seed), idx in sorted(flipped.items()):
        rows.append(
            pd.DataFrame(
                {
                    "count": np.full(len(idx), count, np.int32),
                    "seed": np.full(len(idx), seed, np.int32),
                    "index": idx.astype(np.int64),
                    "old_label": old_labels[idx].astype(np.int16),
                    "new_label": new_labels[(count, seed)][idx].astype(np.int16),
                }
            )
        )
    cols = ["count", "seed", "index", "old_label", "new_label"]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=cols)


def check_metrics(metrics: pd.DataFrame, *, source: str = "metrics") -> None:
    """Refuse a metrics table the statistics cannot use, with one line saying why."""
    missing = [c for c in METRIC_COLUMNS if c not in metrics.columns]
    if missing:
        raise SweepError(f"{source} lacks column(s): {', '.join(missing)}")
    if len(metrics) == 0:
        raise SweepError(f"{source} has no rows: the sweep recorded nothing")
    if metrics["paired"].nunique() != 1:
        raise SweepError(f"{source} mixes paired and unpaired replicas")
    if not (metrics["count"] == 0).any():
        raise SweepError(f"{source} has no clean (count 0) replicas to compare with")
    if metrics.duplicated(["replica", "epoch", "class_id"]).any():
        raise SweepError(f"{source} repeats a replica x epoch x class row")
    per_replica = metrics.groupby("replica")[["count", "seed"]].nunique()
    if (per_replica > 1).any(axis=None):
        raise SweepError(f"{source} gives one replica several counts or seeds")
    if bool(metrics["paired"].iloc[0]):
        # An attack matrix has one replica per pair at each count x seed.
        cell = ["count", "seed"] + [c for c in ("source", "target") if c in metrics]
        replicas = metrics.drop_duplicates("replica")
        if replicas.duplicated(cell).any():
            raise SweepError(f"{source} is paired but repeats a count x seed replica")
