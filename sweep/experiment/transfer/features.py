"""Frozen backbone features of a head sweep's images, extracted once and cached.

Cached under `$SWEEP_CACHE/features/` keyed by the images' hash and the
backbone weights' hash. The engine then holds those features where SimpleCNN's
images would be.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import NamedTuple

import numpy as np

from sweep.data.cache import cache_root
from sweep.data.hashing import array_hash
from sweep.experiment.transfer import backbones
from sweep.experiment.transfer.two_classes import View


class Features(NamedTuple):
    train: np.ndarray  # (N, ...) float32
    test: np.ndarray  # (M, ...) float32
    info: dict  # backbone name, weights hash, cache key, whether it was cached


def features(config, view: View, train_images: np.ndarray) -> Features:
    """Frozen backbone features of the training images and the test set.

    Cached in `$SWEEP_CACHE/features/` under a key of the backbone's name, its
    weights' hash and the hash of the images, so a second sweep on the same
    data and weights extracts nothing and any change to either extracts anew.
    """
    backbone = backbones.load(config, view)
    test_images = view.dataset.test_images
    key_blob = json.dumps({
        "backbone": backbone.name,
        "weights": backbone.weights_hash,
        "images": array_hash(train_images, test_images),
        "version": 1,
    }, sort_keys=True).encode()
    key = hashlib.sha256(key_blob).hexdigest()[:32]
    path = cache_root() / "features" / f"{backbone.name}-{key}.npz"
    info = {"backbone": backbone.name, "weights_hash": backbone.weights_hash,
            "features_key": key, **backbone.info}
    if path.is_file():
        try:
            with np.load(path) as z:
                return Features(z["train"], z["test"], {**info, "cached": True})
        except (OSError, ValueError, KeyError):
            pass  # a torn or foreign file: extract again and replace it
    train = backbone.extract(train_images)
    test = backbone.extract(test_images)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, train=train, test=test)
    os.replace(tmp, path)
    return Features(train, test, {**info, "cached": False})
