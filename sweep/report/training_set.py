"""The training set a sweep used, reloaded for the figures that show images.

Loaded through `sweep.data` and checked against the manifest's data hash and
poisoned.parquet; when it cannot be had, the report says why in one line and
leaves those figures out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sweep import data as data_lib
from sweep.errors import one_line


@dataclass(frozen=True)
class TrainingSet:
    """The training images and clean labels the sweep trained on."""

    images: np.ndarray  # (N_full, H, W, C) uint8, the whole loaded split
    rows: np.ndarray  # (N,) row in `images` of each training example
    labels: np.ndarray  # (N,) clean labels of the training examples


def load_training_set(
    manifest: dict, poisoned: pd.DataFrame | None
) -> tuple[TrainingSet | None, str | None]:
    """Load the sweep's training set via sweep.data, checked against the manifest.

    Returns:
      (training set, None), or (None, one line saying why it is unavailable).
    """
    config = manifest.get("config", {})
    spec = config.get("data")
    recorded = (
        manifest.get("data", {}).get("source")
        if isinstance(manifest.get("data"), dict)
        else None
    )
    if spec is None and recorded and (recorded == "sample" or Path(recorded).exists()):
        spec = recorded
    if spec is None and not os.environ.get("SWEEP_DATA"):
        # load(None) would download CIFAR-10: not something a report should do.
        return None, "the sweep recorded no data location and $SWEEP_DATA is unset"
    try:
        ds = data_lib.load(spec)
    except Exception as error:  # any loader failure only costs these figures
        return None, f"the training data could not be loaded ({one_line(error)})"
    expected = manifest.get("data_hash")
    if expected and ds.content_hash != expected:
        return None, f"the data at {spec} is not what the sweep trained on (hash)"
    rows = np.arange(len(ds.train_labels))
    if config.get("train_size") is not None:
        rows = data_lib.balanced_subset(
            ds.train_labels,
            int(config["train_size"]),
            seed=int(config.get("subset_seed", 0)),
        )
    labels = np.asarray(ds.train_labels)[rows]
    if poisoned is not None and len(poisoned):
        index = poisoned["index"].to_numpy(dtype=np.int64)
        if (
            index.max() >= len(rows)
            or (labels[index] != poisoned["old_label"].to_numpy()).any()
        ):
            return None, "poisoned.parquet does not match the loaded training labels"
    return TrainingSet(images=ds.train_images, rows=rows, labels=labels), None
