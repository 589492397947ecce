"""Data of the CPU detect demo (issue 10's note), from the checkout root:

    python scripts/detect_demo_data.py

writes runs/cifar_small, a reduced CIFAR-10 parquet folder: a class-balanced
1,000-image training subset (sweep.data.balanced_subset, seed 0) and the first
100 test images of each class of /work/shared/data/cifar10.
"""

import os
import sys

import numpy as np

sys.path.insert(0, ".")
from sweep import data  # noqa: E402
from tests.fixtures_data import write_parquet_dataset  # noqa: E402

os.makedirs("runs", exist_ok=True)
ds = data.load("/work/shared/data/cifar10")
rows = data.balanced_subset(ds.train_labels, 1000, seed=0)
test = np.concatenate([np.flatnonzero(ds.test_labels == c)[:100] for c in range(10)])
small = data.dataset_from_arrays(ds.train_images[rows], ds.train_labels[rows],
                                 ds.test_images[test], ds.test_labels[test],
                                 ds.class_names, source="cifar10-small")
np.save("runs/small_rows.npy", rows)
write_parquet_dataset("runs/cifar_small", small)
print(len(rows), len(test))
