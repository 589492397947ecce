"""The embedded sample: 10k/2k CIFAR-10 images shipped inside the package."""

from __future__ import annotations

import pathlib

from sweep.data import parquet
from sweep.data.dataset import Dataset, from_arrays
from sweep.errors import SweepError


def sample_path() -> pathlib.Path:
    """Returns the folder of the embedded sample (train.parquet, test.parquet)."""
    return pathlib.Path(__file__).resolve().parent.parent / "sample"


def load(cache: pathlib.Path) -> Dataset:
    root = sample_path()
    if not (root / "train.parquet").is_file():
        raise SweepError(f"the embedded sample is missing from {root}")
    return from_arrays(parquet.load(root, root, cache), "sample")
