"""The Dataset every later stage sees, and the checks any reader's arrays pass.

A reader (one module per format) returns `Arrays`; `dataset_from_arrays`
validates them, makes them read-only and hashes them into a `Dataset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from sweep.data.hashing import content_hash
from sweep.errors import SweepError

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGE_SHAPE = (32, 32, 3)  # (H, W, C) every decoded image must have


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """One train/test split pair, as every later stage sees it.

    The arrays are read-only: poisoning makes new label arrays, never edits these.
    """

    train_images: np.ndarray  # (N, H, W, C) uint8, HWC RGB
    train_labels: np.ndarray  # (N,) int32 in [0, len(class_names))
    test_images: np.ndarray  # (M, H, W, C) uint8
    test_labels: np.ndarray  # (M,) int32
    class_names: tuple[str, ...]
    source: str  # what was loaded: resolved path, "sample", "download:..."
    content_hash: str  # "sha256:<hex>", see `content_hash`

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        return (
            f"Dataset(train={self.train_images.shape}, test={self.test_images.shape},"
            f" classes={len(self.class_names)}, source={self.source!r},"
            f" content_hash={self.content_hash[:19]}...)"
        )


class Arrays(NamedTuple):
    """What a format's reader returns, before `dataset_from_arrays` checks it."""

    train_images: np.ndarray  # (N, H, W, C) uint8
    train_labels: np.ndarray  # (N,) int
    test_images: np.ndarray  # (M, H, W, C) uint8
    test_labels: np.ndarray  # (M,) int
    class_names: tuple[str, ...]


def dataset_from_arrays(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    class_names: Sequence[str],
    *,
    source: str,
) -> Dataset:
    """Validates arrays and wraps them (read-only, hashed) as a Dataset.

    Args:
      train_images, test_images: (N, H, W, C) uint8; both splits the same H, W, C.
      train_labels, test_labels: (N,) integers in [0, len(class_names)).
      class_names: names indexed by label.
      source: what the arrays came from, for messages and the manifest.

    Returns:
      The Dataset; SweepError names the first problem found.
    """
    names = tuple(str(n) for n in class_names)
    if not names:
        raise SweepError(f"{source}: no class names")
    if len(set(names)) != len(names):
        raise SweepError(f"{source}: class names repeat: {list(names)}")
    splits = []
    for split, images, labels in (
        ("train", train_images, train_labels),
        ("test", test_images, test_labels),
    ):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise SweepError(
                f"{source}: {split} images are {images.dtype} {images.shape}, "
                "expected uint8 (N, H, W, C)"
            )
        if len(images) == 0:
            raise SweepError(f"{source}: the {split} split has no images")
        labels = checked_labels(labels, len(names), f"{source} ({split})")
        if len(labels) != len(images):
            raise SweepError(
                f"{source}: {split} has {len(images)} images but {len(labels)} labels"
            )
        splits.append((frozen(images), frozen(labels.astype(np.int32))))
    (tr_x, tr_y), (te_x, te_y) = splits
    if tr_x.shape[1:] != te_x.shape[1:]:
        raise SweepError(
            f"{source}: train images are {tr_x.shape[1:]} but test images are "
            f"{te_x.shape[1:]}"
        )
    return Dataset(
        train_images=tr_x,
        train_labels=tr_y,
        test_images=te_x,
        test_labels=te_y,
        class_names=names,
        source=source,
        content_hash=content_hash(tr_x, tr_y, te_x, te_y, names),
    )



def from_arrays(arrays: Arrays, source: str) -> Dataset:
    return dataset_from_arrays(*arrays, source=source)


def checked_labels(labels: np.ndarray, n_classes: int, where: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.size == 0:
        return labels.reshape(0).astype(np.int64)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise SweepError(
            f"{where}: labels must be 1-D integers, got {labels.dtype} {labels.shape}"
        )
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= n_classes:
        bad = low if low < 0 else high
        raise SweepError(
            f"{where}: label {bad} is out of range for {n_classes} classes "
            f"(0..{n_classes - 1})"
        )
    return labels



def frozen(a: np.ndarray) -> np.ndarray:
    """A read-only view: the caller's own array stays as writeable as it was."""
    view = np.ascontiguousarray(a).view()
    view.flags.writeable = False
    return view
