"""Hashes of data: a dataset's content, any arrays, an index selection.

One home for every hash a manifest or a cache key records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np


def content_hash(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    class_names: Sequence[str],
) -> str:
    """Hashes a dataset's content, independent of where it was read from.

    Args:
      train_images, test_images: (N, H, W, C) uint8, in dataset order.
      train_labels, test_labels: (N,) integer labels.
      class_names: names indexed by label.

    Returns:
      "sha256:<hex>" over a header (class names, both shapes, so the split point
      is unambiguous), then train pixels, train labels as int32 little-endian,
      test pixels, test labels.
    """
    header = {
        "class_names": list(class_names),
        "train_shape": list(np.shape(train_images)),
        "test_shape": list(np.shape(test_images)),
    }
    h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for images, labels in ((train_images, train_labels), (test_images, test_labels)):
        h.update(np.ascontiguousarray(images, dtype=np.uint8).data)
        h.update(np.ascontiguousarray(labels, dtype="<i4").data)
    return "sha256:" + h.hexdigest()


def array_hash(*arrays: np.ndarray) -> str:
    """"sha256:<hex>" over each array's dtype, shape and bytes, in order."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data)
    return "sha256:" + h.hexdigest()


def index_hash(indices: np.ndarray) -> str:
    """"sha256:<hex>" of indices as int64 bytes (a training subset's rows); the
    value manifests have always recorded, so it must not change."""
    return "sha256:" + hashlib.sha256(np.asarray(indices, np.int64).tobytes()).hexdigest()
