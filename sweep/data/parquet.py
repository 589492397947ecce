"""Parquet folders: flat train*/test* files, single files, dataset-hub exports.

Each row holds an encoded image (column `image` or `img`, raw bytes or the
hub's struct{bytes, path}) and an integer `label`; class names come from the
schema metadata when present.
"""

from __future__ import annotations

import json
import pathlib
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sweep.data import cache as cache_lib
from sweep.data.dataset import CIFAR10_CLASSES, Arrays, checked_labels
from sweep.data.decode import decode_images
from sweep.errors import SweepError, one_line

IMAGE_COLUMNS = ("image", "img")


def find_shards(
    folder: pathlib.Path, *, recursive: bool
) -> dict[str, list[pathlib.Path]]:
    """Finds train*/test* parquet files, each split's shards in name order."""
    files = folder.rglob("*.parquet") if recursive else folder.glob("*.parquet")
    shards: dict[str, list[pathlib.Path]] = {"train": [], "test": []}
    for f in files:
        for split in shards:
            if f.name.startswith(split) and f.is_file():
                shards[split].append(f)
    for split, found in shards.items():
        parents = sorted({str(f.parent) for f in found})
        if len(parents) > 1:
            raise SweepError(
                f"{split} parquet files found in several folders under {folder} "
                f"({', '.join(parents)}); pass one of them"
            )
        shards[split] = sorted(found, key=lambda f: f.name)
    return shards


def load(
    folder: pathlib.Path,
    root: pathlib.Path,
    cache: pathlib.Path,
    *,
    recursive: bool = False,
) -> Arrays:
    """Reads a parquet folder's train and test shards, through the cache."""
    shards = find_shards(folder, recursive=recursive)
    if not shards["train"]:
        raise SweepError(f"no train*.parquet under {folder}")
    if not shards["test"]:
        raise SweepError(f"{folder} has train parquet files but no test*.parquet")
    files = shards["train"] + shards["test"]
    return cache_lib.cached(
        "parquet", root, files, cache, lambda: _read_parquet(shards)
    )



def find_flat(path: pathlib.Path) -> pathlib.Path | None:
    """The folder to read for a train*/test* parquet file or a flat folder."""
    if path.is_file():
        if path.suffix != ".parquet":
            return None
        if not path.name.startswith(("train", "test")):
            raise SweepError(
                f"{path}: a parquet file must be named train*.parquet or "
                "test*.parquet, with the other split beside it"
            )
        return path.parent
    if path.is_dir() and find_shards(path, recursive=False)["train"]:
        return path
    return None


def read_flat(folder: pathlib.Path, cache: pathlib.Path) -> Arrays:
    return load(folder, folder, cache, recursive=False)


def find_nested(path: pathlib.Path) -> pathlib.Path | None:
    """A folder with train*/test* parquet files somewhere below (hub exports)."""
    if path.is_dir() and any(find_shards(path, recursive=True).values()):
        return path
    return None


def read_nested(folder: pathlib.Path, cache: pathlib.Path) -> Arrays:
    return load(folder, folder, cache, recursive=True)

class _Shard(NamedTuple):
    path: pathlib.Path
    blobs: list[bytes | None]  # encoded images, row order
    labels: np.ndarray  # (rows,) int64
    class_names: tuple[str, ...] | None  # from the schema metadata, if any


def _read_parquet(shards: dict[str, list[pathlib.Path]]) -> Arrays:
    read = {split: [_read_shard(p) for p in paths] for split, paths in shards.items()}
    everything = read["train"] + read["test"]
    named = {s.class_names for s in everything if s.class_names is not None}
    if len(named) > 1:
        raise SweepError(
            f"parquet files under {shards['train'][0].parent} disagree on class "
            f"names: {sorted(list(n) for n in named)}"
        )
    if named:
        names = named.pop()
    else:
        n = max(int(s.labels.max(initial=-1)) for s in everything) + 1
        names = (
            CIFAR10_CLASSES
            if n == len(CIFAR10_CLASSES)
            else tuple(f"class_{i}" for i in range(n))
        )
    for s in everything:
        checked_labels(s.labels, len(names), str(s.path))
    out = []
    for split in ("train", "test"):
        images = [
            decode_images(s.blobs, lambda i, s=s: f"{s.path} row {i}")
            for s in read[split]
        ]
        out.append(np.concatenate(images))
        out.append(np.concatenate([s.labels for s in read[split]]).astype(np.int32))
    return Arrays(*out, class_names=names)


def _read_shard(path: pathlib.Path) -> _Shard:
    try:
        f = pq.ParquetFile(path)
        schema = f.schema_arrow
        image_col = next((c for c in IMAGE_COLUMNS if c in schema.names), None)
        if image_col is None or "label" not in schema.names:
            raise SweepError(
                f"{path} needs an image column ('image' or 'img') and a 'label' "
                f"column; it has {schema.names}"
            )
        table = f.read(columns=[image_col, "label"])
    except (pa.ArrowException, OSError) as e:
        raise SweepError(
            f"{path} is not a readable parquet file ({one_line(e)})"
        ) from None
    return _Shard(
        path=path,
        blobs=_image_blobs(table.column(image_col), image_col, path),
        labels=_label_values(table.column("label"), path),
        class_names=_metadata_class_names(schema.metadata or {}, path),
    )


def _image_blobs(
    column: pa.ChunkedArray, name: str, path: pathlib.Path
) -> list[bytes | None]:
    kind = column.type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return column.to_pylist()
    if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
        inner = kind.field("bytes").type
        if pa.types.is_binary(inner) or pa.types.is_large_binary(inner):
            # The dataset-hub layout: {bytes, path} per row.
            return [row and row["bytes"] for row in column.to_pylist()]
    raise SweepError(
        f"{path}: column '{name}' holds {kind}, expected encoded image bytes "
        "(binary, or struct{bytes, path})"
    )


def _label_values(column: pa.ChunkedArray, path: pathlib.Path) -> np.ndarray:
    if not pa.types.is_integer(column.type):
        raise SweepError(f"{path}: labels are {column.type}, expected integers")
    if column.null_count:
        raise SweepError(f"{path}: {column.null_count} label(s) are missing")
    return column.to_numpy().astype(np.int64)


def _metadata_class_names(
    metadata: dict[bytes, bytes], path: pathlib.Path
) -> tuple[str, ...] | None:
    """Class names from `class_names` (a JSON list) or a hub ClassLabel feature."""
    if b"class_names" in metadata:
        try:
            names = json.loads(metadata[b"class_names"])
        except ValueError:
            names = None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SweepError(
                f"{path}: the class_names schema metadata is not a JSON list of strings"
            )
        return tuple(names)
    # Hub exports describe their features in a "huggingface" JSON blob; it is
    # only a fallback, so an unexpected shape just means "no names here".
    try:
        features = json.loads(metadata[b"huggingface"])["info"]["features"]
        names = features["label"]["names"]
    except (KeyError, TypeError, ValueError):
        return None
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None

