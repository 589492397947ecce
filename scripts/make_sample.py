"""Build the embedded sample (sweep/sample/{train,test}.parquet) from CIFAR-10.

A seeded, class-balanced selection (1,000 train and 200 test images per class by
default) of the shared JPEG parquet, with the original bytes kept (no
re-encoding), rows sorted by class then source name, and the class names in the
schema metadata so `sweep.data.load("sample")` reads it like any parquet folder.

    python scripts/make_sample.py [/work/shared/data/cifar10] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sweep.data import CIFAR10_CLASSES, balanced_subset, sample_path
from sweep.errors import SweepError


def select(table: pa.Table, per_class: int, *, seed: int) -> pa.Table:
    """Takes a class-balanced subset of rows.

    Args:
      table: rows with `image`, `label` and `source` columns.
      per_class: rows to keep per class.
      seed: which balanced subset (see sweep.data.balanced_subset).

    Returns:
      The selected rows, sorted by label then source.
    """
    labels = table.column("label").to_numpy()
    n_classes = len(np.unique(labels))
    keep = balanced_subset(labels, per_class * n_classes, seed=seed)
    picked = table.select(["image", "label", "source"]).take(keep)
    return picked.sort_by([("label", "ascending"), ("source", "ascending")])


def write(table: pa.Table, path: pathlib.Path, class_names: tuple[str, ...]) -> None:
    """Writes one split with the class names in the schema metadata."""
    metadata = {b"class_names": json.dumps(list(class_names)).encode()}
    table = table.replace_schema_metadata(metadata)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "source",
        nargs="?",
        default="/work/shared/data/cifar10",
        help="folder holding train.parquet and test.parquet (JPEG bytes)",
    )
    parser.add_argument("--out", default=str(sample_path()), help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--test-per-class", type=int, default=200)
    args = parser.parse_args(argv)

    source, out = pathlib.Path(args.source), pathlib.Path(args.out)
    missing = [f for f in ("train", "test") if not (source / f"{f}.parquet").is_file()]
    if missing:
        print(f"make_sample: no {missing[0]}.parquet in {source}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    try:
        for split, per_class in (
            ("train", args.train_per_class),
            ("test", args.test_per_class),
        ):
            table = pq.read_table(source / f"{split}.parquet")
            picked = select(table, per_class, seed=args.seed)
            write(picked, out / f"{split}.parquet", CIFAR10_CLASSES)
            print(f"{out / f'{split}.parquet'}: {picked.num_rows} rows")
    except (SweepError, OSError, pa.ArrowException) as e:
        print(f"make_sample: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
