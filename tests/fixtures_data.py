"""On-disk dataset fixtures for tests: real CIFAR-10 slices in every format.

Import from other tests as `from tests.fixtures_data import ...`. Writers take a
`sweep.data.Dataset` and lay the same pixels out as parquet, as a genuine
cifar-10-batches-py folder, as an image folder, or as a download tarball, so a
test can check that every loader reads them back identically.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pathlib
import pickle
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sweep import data
from sweep.data import Dataset


def shared_data_dir() -> pathlib.Path:
    """The shared CIFAR-10 parquet folder ($SWEEP_TEST_DATA)."""
    return pathlib.Path(
        os.environ.get("SWEEP_TEST_DATA", "/work/shared/data/cifar10")
    ).expanduser()


def require_shared_data() -> pathlib.Path:
    """Returns shared_data_dir(), or skips the calling test if it is absent."""
    root = shared_data_dir()
    if not all((root / f"{s}.parquet").is_file() for s in ("train", "test")):
        pytest.skip(f"shared CIFAR-10 parquet not found in {root} (SWEEP_TEST_DATA)")
    return root


@functools.lru_cache(maxsize=8)
def shared_slice(n_train_per_class: int, n_test_per_class: int) -> Dataset:
    """The first n images of each class of the shared parquet, decoded.

    Rows are sorted by class then file name, so the slice is too. Skips the test
    if the shared data is absent. The result is read-only, so caching is safe.

    Args:
      n_train_per_class, n_test_per_class: images kept per class and split.

    Returns:
      A Dataset with source "shared-slice".
    """
    root = require_shared_data()
    arrays = []
    for split, n in (("train", n_train_per_class), ("test", n_test_per_class)):
        table = pq.read_table(root / f"{split}.parquet", columns=["image", "label"])
        labels = table.column("label").to_numpy().astype(np.int64)
        keep = np.concatenate([np.flatnonzero(labels == c)[:n] for c in range(10)])
        blobs = table.column("image").take(keep).to_pylist()
        images = np.stack(
            [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs]
        )
        arrays += [images, labels[keep]]
    return data.dataset_from_arrays(
        *arrays, data.CIFAR10_CLASSES, source="shared-slice"
    )


def synthetic_dataset(
    n_train_per_class: int = 4,
    n_test_per_class: int = 2,
    *,
    n_classes: int = 3,
    seed: int = 0,
    class_names: tuple[str, ...] | None = None,
) -> Dataset:
    """Random-pixel 32x32 RGB images, sorted by class; no shared data needed.

    `class_names` (e.g. `data.CIFAR10_CLASSES`) replaces the generic names and
    sets the number of classes.
    """
    if class_names is not None:
        n_classes = len(class_names)
    rng = np.random.default_rng(seed)
    arrays = []
    for n in (n_train_per_class, n_test_per_class):
        labels = np.repeat(np.arange(n_classes), n)
        images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
        arrays += [images, labels]
    names = class_names or tuple(f"class_{i}" for i in range(n_classes))
    return data.dataset_from_arrays(*arrays, names, source="synthetic")


def encode_image(image: np.ndarray, image_format: str = "PNG") -> bytes:
    """Encodes one (H, W) or (H, W, C) uint8 array (PNG is lossless)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buffer, format=image_format)
    return buffer.getvalue()


def write_parquet_dataset(
    directory: str | os.PathLike,
    ds: Dataset,
    *,
    layout: str = "flat",
    train_shards: int = 1,
    class_names_metadata: bool = True,
    image_format: str = "PNG",
) -> pathlib.Path:
    """Writes ds as parquet and returns the path to pass to `load`.

    Args:
      directory: created if needed.
      ds: what to write, in its order.
      layout: "flat": directory/{train,test}.parquet with an `image` bytes column
        and a `class_names` metadata key. "hub": a dataset-hub export,
        directory/plain_text/{train,test}-0000i-of-0000n.parquet with an `img`
        struct{bytes, path} column and the names in a "huggingface" metadata key.
      train_shards: how many files the train split is cut into.
      class_names_metadata: False leaves the class names out.
      image_format: Pillow format name of the encoded bytes.

    Returns:
      directory.
    """
    root = pathlib.Path(directory)
    folder = root / "plain_text" if layout == "hub" else root
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "hub":
        features = {"img": {"_type": "Image"}, "label": {"_type": "ClassLabel"}}
        features["label"]["names"] = list(ds.class_names)
        metadata = {b"huggingface": json.dumps({"info": {"features": features}})}
    elif layout == "flat":
        metadata = {b"class_names": json.dumps(list(ds.class_names))}
    else:
        raise ValueError(f"layout must be 'flat' or 'hub', not {layout!r}")
    for split, images, labels in (
        ("train", ds.train_images, ds.train_labels),
        ("test", ds.test_images, ds.test_labels),
    ):
        shards = train_shards if split == "train" else 1
        bounds = np.linspace(0, len(images), shards + 1).astype(int)
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            blobs = [encode_image(x, image_format) for x in images[lo:hi]]
            if layout == "hub":
                paths = [f"{split}_{j}.png" for j in range(lo, hi)]
                column = pa.StructArray.from_arrays(
                    [pa.array(blobs, pa.binary()), pa.array(paths, pa.string())],
                    names=["bytes", "path"],
                )
                table = pa.table({"img": column, "label": labels[lo:hi]})
                name = f"{split}-{i:05d}-of-{shards:05d}.parquet"
            else:
                table = pa.table(
                    {"image": pa.array(blobs, pa.binary()), "label": labels[lo:hi]}
                )
                name = f"{split}.parquet" if shards == 1 else f"{split}-{i:05d}.parquet"
            if class_names_metadata:
                table = table.replace_schema_metadata(metadata)
            pq.write_table(table, folder / name)
    return root


def write_cifar_batches(
    directory: str | os.PathLike,
    ds: Dataset,
    *,
    n_batches: int = 5,
    bytes_keys: bool = False,
) -> pathlib.Path:
    """Writes ds as a cifar-10-batches-py folder like the original files.

    Each batch is a pickled dict with 'batch_label', 'labels', 'data' (uint8
    (n, 3072), planar R, G, B rows) and 'filenames'; batches.meta holds
    'label_names'. Protocol 2, with numpy's reconstruct function named
    numpy.core.multiarray as in the Python 2 originals.

    Args:
      directory: the folder cifar-10-batches-py is created in.
      ds: what to write; the train split is cut into n_batches data batches.
      n_batches: number of data_batch_i files.
      bytes_keys: use bytes dict keys (as an encoding="bytes" load re-pickled).

    Returns:
      The cifar-10-batches-py folder.
    """
    folder = pathlib.Path(directory) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def key(k: str) -> str | bytes:
        return k.encode() if bytes_keys else k

    def dump(obj: dict, path: pathlib.Path) -> None:
        blob = pickle.dumps(obj, protocol=2)
        # Protocol-2 GLOBAL opcodes are plain text lines, so renaming the module
        # changes no length field.
        blob = blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        path.write_bytes(blob)

    def batch(label: str, images: np.ndarray, labels: np.ndarray, start: int):
        planar = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
        return {
            key("batch_label"): label,
            key("labels"): [int(y) for y in labels],
            key("data"): np.ascontiguousarray(planar, dtype=np.uint8),
            key("filenames"): [f"img_{start + i:05d}.png" for i in range(len(labels))],
        }

    bounds = np.linspace(0, len(ds.train_images), n_batches + 1).astype(int)
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        dump(
            batch(
                f"training batch {i + 1} of {n_batches}",
                ds.train_images[lo:hi],
                ds.train_labels[lo:hi],
                lo,
            ),
            folder / f"data_batch_{i + 1}",
        )
    dump(
        batch("testing batch 1 of 1", ds.test_images, ds.test_labels, 0),
        folder / "test_batch",
    )
    dump(
        {
            key("num_cases_per_batch"): int(bounds[1]),
            key("label_names"): list(ds.class_names),
            key("num_vis"): 3072,
        },
        folder / "batches.meta",
    )
    return folder


def write_image_folder(
    directory: str | os.PathLike, ds: Dataset, *, image_format: str = "PNG"
) -> pathlib.Path:
    """Writes ds as directory/{train,test}/<class>/<index>.png.

    An image folder is read class by class in sorted order, so ds must already
    be sorted by label and its class names must sort in label order.

    Returns:
      directory.
    """
    if list(ds.class_names) != sorted(ds.class_names):
        raise ValueError("class names must be in sorted order for an image folder")
    root = pathlib.Path(directory)
    suffix = ".png" if image_format == "PNG" else ".jpg"
    for split, images, labels in (
        ("train", ds.train_images, ds.train_labels),
        ("test", ds.test_images, ds.test_labels),
    ):
        if np.any(np.diff(labels) < 0):
            raise ValueError(f"{split} labels must be sorted for an image folder")
        for name in ds.class_names:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            path = root / split / ds.class_names[label] / f"{i:05d}{suffix}"
            path.write_bytes(encode_image(image, image_format))
    return root


def write_cifar_tarball(
    directory: str | os.PathLike, ds: Dataset, *, extra_member: str | None = None
) -> tuple[pathlib.Path, str]:
    """Writes ds as a cifar-10-python.tar.gz like the canonical download.

    Args:
      directory: where the tarball (and its staging folder) go.
      ds: what the batches hold.
      extra_member: also add a small file under this archive name (to build a
        hostile archive, e.g. "cifar-10-batches-py/../escaped").

    Returns:
      (tarball path, its md5 hex digest).
    """
    root = pathlib.Path(directory)
    folder = write_cifar_batches(root / "staging", ds)
    tarball = root / "cifar-10-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
        if extra_member is not None:
            info = tarfile.TarInfo(extra_member)
            payload = b"should never be extracted\n"
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return tarball, hashlib.md5(tarball.read_bytes()).hexdigest()
