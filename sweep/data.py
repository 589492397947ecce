"""Turn any CIFAR-style source into uint8 arrays, labels, class names and a hash.

Sources (see `load`): the embedded sample, parquet folders (flat or dataset-hub
exports), the canonical `cifar-10-batches-py` pickles, `train/<class>/*.png`
image folders, and the real download (tfds, else the canonical tarball).
Nothing downstream knows which one was read: the same pixels and labels in the
same order give the same `Dataset.content_hash` whichever loader read them.

Loading never executes code from the data: pickles go through an unpickler that
only resolves numpy's array-reconstruction globals, and Pillow only gets to try
its raster decoders (no EPS, which would run Ghostscript).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import pickle
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

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
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
IMAGE_SHAPE = (32, 32, 3)  # (H, W, C) every decoded image must have

_BATCHES_DIR = "cifar-10-batches-py"
_IMAGE_COLUMNS = ("image", "img")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Raster formats only: Pillow's EPS plugin would hand the bytes to Ghostscript.
_PIL_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")
_CACHE_VERSION = 1  # bump when the cached arrays' meaning changes
_NO_DOWNLOAD = (
    "no data given and CIFAR-10 could not be downloaded ({reason}); pass --data "
    "PATH (a parquet folder, cifar-10-batches-py, or an image folder), or --data "
    "sample"
)


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


class _Arrays(NamedTuple):
    train_images: np.ndarray  # (N, H, W, C) uint8
    train_labels: np.ndarray  # (N,) int
    test_images: np.ndarray  # (M, H, W, C) uint8
    test_labels: np.ndarray  # (M,) int
    class_names: tuple[str, ...]


def sample_path() -> pathlib.Path:
    """Returns the folder of the embedded sample (train.parquet, test.parquet)."""
    return pathlib.Path(__file__).resolve().parent / "sample"


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
        labels = _checked_labels(labels, len(names), f"{source} ({split})")
        if len(labels) != len(images):
            raise SweepError(
                f"{source}: {split} has {len(images)} images but {len(labels)} labels"
            )
        splits.append((_frozen(images), _frozen(labels.astype(np.int32))))
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


def balanced_subset(labels: np.ndarray, n: int, *, seed: int) -> np.ndarray:
    """Picks a class-balanced subset of indices.

    Each class present gets n // n_classes indices, the first n % n_classes
    classes (in label order) one more. Within a class the picks are a prefix of
    a permutation seeded by (seed, class), so a larger n contains a smaller one.

    Args:
      labels: (N,) integer labels.
      n: subset size, n_classes <= n <= what the classes can supply.
      seed: non-negative; the same seed gives the same subset.

    Returns:
      (n,) int64 indices into labels, sorted ascending.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise SweepError(
            f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}"
        )
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise SweepError(f"subset size must be an integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise SweepError(f"subset seed must be a non-negative integer, got {seed!r}")
    classes, counts = np.unique(labels, return_counts=True)
    if n < len(classes):
        raise SweepError(
            f"subset size {n} is smaller than the number of classes ({len(classes)})"
        )
    quota = np.full(len(classes), n // len(classes))
    quota[: n % len(classes)] += 1
    short = np.flatnonzero(quota > counts)
    if short.size:
        c = short[0]
        raise SweepError(
            f"subset size {n} needs {quota[c]} images of class {classes[c]}, but "
            f"only {counts[c]} are available"
        )
    picks = []
    for c, q in zip(classes, quota, strict=True):
        members = np.flatnonzero(labels == c)
        rng = np.random.default_rng((int(seed), int(c)))
        picks.append(rng.permutation(members)[:q])
    return np.sort(np.concatenate(picks)).astype(np.int64)


def load(
    spec: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Loads a dataset from wherever `spec` points.

    Args:
      spec: None: $SWEEP_DATA if set, else download CIFAR-10 (tfds if installed,
        else the canonical tarball; $SWEEP_CIFAR_URL overrides its URL and, with
        it, $SWEEP_CIFAR_MD5 its checksum). "sample": the embedded sample.
        Otherwise a path: a folder of train*.parquet/test*.parquet (found
        recursively, shards concatenated in name order) or one such file; a
        cifar-10-batches-py folder or its parent; or ROOT/{train,test}/<class>/
        holding 32x32 RGB .jpg/.jpeg/.png files.
      cache_dir: where decoded arrays and downloads are kept; default
        $SWEEP_CACHE, else ~/.cache/sweep.

    Returns:
      The Dataset. Every problem with the source is a one-line SweepError.
    """
    cache = _cache_dir(cache_dir)
    if spec is None:
        spec = os.environ.get("SWEEP_DATA") or None
    try:
        if spec is None:
            return _load_download(cache)
        spec = os.fspath(spec)
        if spec == "sample":
            root = sample_path()
            if not (root / "train.parquet").is_file():
                raise SweepError(f"the embedded sample is missing from {root}")
            return _dataset(_load_parquet(root, root, cache), "sample")
        path = pathlib.Path(spec).expanduser()
        if not path.exists():
            raise SweepError(f"data path {spec} does not exist")
        path = path.resolve()
        return _dataset(_load_path(path, cache), str(path))
    except OSError as e:  # unreadable folders and files, full disks
        where = e.filename or spec or "the data"
        raise SweepError(
            f"could not read {where} ({_one_line(e.strerror or e)})"
        ) from None


def _dataset(arrays: _Arrays, source: str) -> Dataset:
    return dataset_from_arrays(*arrays, source=source)


def _load_path(path: pathlib.Path, cache: pathlib.Path) -> _Arrays:
    """Detects a path's format and loads it."""
    if path.is_file():
        if path.suffix == ".parquet":
            if not path.name.startswith(("train", "test")):
                raise SweepError(
                    f"{path}: a parquet file must be named train*.parquet or "
                    "test*.parquet, with the other split beside it"
                )
            return _load_parquet(path.parent, path.parent, cache, recursive=False)
        if path.name in ("batches.meta", "test_batch") or path.name.startswith(
            "data_batch_"
        ):
            return _load_cifar_batches(path.parent)
        raise SweepError(
            f"{path} is not a dataset: expected a parquet file or a folder"
        )
    if not path.is_dir():
        raise SweepError(f"{path} is neither a file nor a folder")
    for candidate in (path, path / _BATCHES_DIR):
        if any((candidate / f).is_file() for f in ("data_batch_1", "test_batch")):
            return _load_cifar_batches(candidate)
    if _parquet_shards(path, recursive=False)["train"]:
        return _load_parquet(path, path, cache, recursive=False)
    train = path / "train"
    if train.is_dir() and any(p.is_dir() for p in train.iterdir()):
        return _load_image_folder(path, cache)
    if any(_parquet_shards(path, recursive=True).values()):
        return _load_parquet(path, path, cache, recursive=True)
    raise SweepError(
        f"no recognisable data in {path}: expected train*.parquet/test*.parquet, "
        f"a {_BATCHES_DIR} folder, or train/<class>/*.png and test/<class>/*.png"
    )


# Decoding and the decoded-array cache.


def _decode_images(
    blobs: Sequence[bytes | None], where: Callable[[int], str]
) -> np.ndarray:
    """Decodes encoded images into one array.

    Args:
      blobs: encoded image files (JPEG, PNG, ...); None is an error.
      where: index -> "file or row" text for error messages.

    Returns:
      (len(blobs), 32, 32, 3) uint8.
    """
    out = np.empty((len(blobs), *IMAGE_SHAPE), np.uint8)
    height, width, channels = IMAGE_SHAPE
    # Serial on purpose: a thread pool saved ~8% and a process pool lost ~15% on
    # 2 cores for 20k JPEGs (per-image Python overhead dominates), and the
    # result is cached anyway.
    for i, blob in enumerate(blobs):
        if blob is None:
            raise SweepError(f"{where(i)} has no image bytes")
        try:
            with Image.open(io.BytesIO(blob), formats=_PIL_FORMATS) as im:
                bands = len(im.getbands())
                if im.size != (width, height) or im.mode != "RGB":
                    raise SweepError(
                        f"{where(i)} is {im.size[0]}x{im.size[1]} with {bands} "
                        f"channel(s) (mode {im.mode}); expected {width}x{height} "
                        f"with {channels} channels (RGB)"
                    )
                out[i] = np.asarray(im)
        except SweepError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise SweepError(
                f"{where(i)} could not be decoded as an image ({_one_line(e)})"
            ) from None
    return out


def _cache_dir(cache_dir: str | os.PathLike | None) -> pathlib.Path:
    if cache_dir is None:
        cache_dir = os.environ.get("SWEEP_CACHE") or "~/.cache/sweep"
    return pathlib.Path(cache_dir).expanduser()


def _cached(
    kind: str,
    root: pathlib.Path,
    files: Sequence[pathlib.Path],
    cache: pathlib.Path,
    build: Callable[[], _Arrays],
) -> _Arrays:
    """Returns build(), reusing an .npz from an earlier call on unchanged files.

    One cache file per (kind, root); it records the files' resolved paths, sizes
    and mtimes, and is rebuilt when they differ or the file cannot be read.
    """
    stats = [(str(f.resolve()), *_size_mtime(f)) for f in files]
    signature = json.dumps([_CACHE_VERSION, kind, stats])
    name = hashlib.sha256(f"{kind}:{root.resolve()}".encode()).hexdigest()[:20]
    path = cache / f"{kind}-{name}.npz"
    arrays = _read_cache(path, signature)
    if arrays is not None:
        return arrays
    arrays = build()
    _write_cache(path, signature, arrays)
    return arrays


def _size_mtime(path: pathlib.Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _read_cache(path: pathlib.Path, signature: str) -> _Arrays | None:
    if not path.is_file():
        return None
    # Anything wrong with the cache (truncated, foreign, old) means "rebuild":
    # it only ever holds what the source files can give again.
    try:
        # Our own handle: np.load leaks its file when the zip is broken.
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            if str(npz["signature"]) != signature:
                return None
            arrays = _Arrays(
                train_images=npz["train_images"],
                train_labels=npz["train_labels"],
                test_images=npz["test_images"],
                test_labels=npz["test_labels"],
                class_names=tuple(str(n) for n in npz["class_names"]),
            )
    except Exception:
        return None
    for images, labels in ((arrays[0], arrays[1]), (arrays[2], arrays[3])):
        if (
            images.dtype != np.uint8
            or images.shape[1:] != IMAGE_SHAPE
            or labels.shape != images.shape[:1]
            or labels.dtype.kind not in "iu"
        ):
            return None
    return arrays


def _write_cache(path: pathlib.Path, signature: str, arrays: _Arrays) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    except OSError:
        return  # an unwritable cache only costs the next load a decode
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                signature=np.array(signature),
                train_images=arrays.train_images,
                train_labels=arrays.train_labels,
                test_images=arrays.test_images,
                test_labels=arrays.test_labels,
                class_names=np.array(arrays.class_names),
            )
        os.replace(tmp, path)  # readers see the old file or the whole new one
    except OSError:
        pass
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# Parquet: flat folders, single files, dataset-hub exports.


def _parquet_shards(
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


def _load_parquet(
    folder: pathlib.Path,
    root: pathlib.Path,
    cache: pathlib.Path,
    *,
    recursive: bool = False,
) -> _Arrays:
    shards = _parquet_shards(folder, recursive=recursive)
    if not shards["train"]:
        raise SweepError(f"no train*.parquet under {folder}")
    if not shards["test"]:
        raise SweepError(f"{folder} has train parquet files but no test*.parquet")
    files = shards["train"] + shards["test"]
    return _cached("parquet", root, files, cache, lambda: _read_parquet(shards))


class _Shard(NamedTuple):
    path: pathlib.Path
    blobs: list[bytes | None]  # encoded images, row order
    labels: np.ndarray  # (rows,) int64
    class_names: tuple[str, ...] | None  # from the schema metadata, if any


def _read_parquet(shards: dict[str, list[pathlib.Path]]) -> _Arrays:
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
        _checked_labels(s.labels, len(names), str(s.path))
    out = []
    for split in ("train", "test"):
        images = [
            _decode_images(s.blobs, lambda i, s=s: f"{s.path} row {i}")
            for s in read[split]
        ]
        out.append(np.concatenate(images))
        out.append(np.concatenate([s.labels for s in read[split]]).astype(np.int32))
    return _Arrays(*out, class_names=names)


def _read_shard(path: pathlib.Path) -> _Shard:
    try:
        f = pq.ParquetFile(path)
        schema = f.schema_arrow
        image_col = next((c for c in _IMAGE_COLUMNS if c in schema.names), None)
        if image_col is None or "label" not in schema.names:
            raise SweepError(
                f"{path} needs an image column ('image' or 'img') and a 'label' "
                f"column; it has {schema.names}"
            )
        table = f.read(columns=[image_col, "label"])
    except (pa.ArrowException, OSError) as e:
        raise SweepError(
            f"{path} is not a readable parquet file ({_one_line(e)})"
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


def _checked_labels(labels: np.ndarray, n_classes: int, where: str) -> np.ndarray:
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


# cifar-10-batches-py: pickles, read without running anything in them.


def _latin1_encode(obj: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as protocol-2 pickles use it for bytes, latin-1 only."""
    if encoding.replace("-", "").replace("_", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return obj.encode("latin1")


def _numpy_pickle_globals() -> dict[tuple[str, str], Any]:
    # Take the functions from numpy's own reductions rather than importing them
    # by name: numpy 2 moved numpy.core to numpy._core, and the original CIFAR
    # files (Python 2, numpy 1) name the old module.
    reconstruct = np.zeros(1).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Resolves only numpy's array-building globals; anything else is refused."""

    _allowed = _numpy_pickle_globals()

    def __init__(self, file: io.BufferedIOBase, path: pathlib.Path):
        super().__init__(file, encoding="latin1")  # as torchvision reads them
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get((module, name))
        if found is None:
            raise SweepError(
                f"{self._path} is not a CIFAR batch: it references {module}.{name}"
            )
        return found


def _unpickle_dict(path: pathlib.Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, path).load()
    except SweepError:
        raise
    except Exception as e:  # any malformed pickle, whatever it trips over
        raise SweepError(
            f"{path} is not a CIFAR batch: unreadable pickle ({_one_line(e)})"
        ) from None
    if not isinstance(obj, dict):
        raise SweepError(
            f"{path} is not a CIFAR batch: it holds a {type(obj).__name__}, "
            "expected a dict"
        )
    return {
        (k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()
    }


def _read_batch(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """Returns one batch's (n, 32, 32, 3) uint8 images and (n,) labels."""
    batch = _unpickle_dict(path)
    missing = [k for k in ("data", "labels") if k not in batch]
    if missing:
        raise SweepError(
            f"{path} is not a CIFAR batch: no {', '.join(missing)} "
            f"(keys: {sorted(map(str, batch))})"
        )
    data, labels = batch["data"], batch["labels"]
    height, width, channels = IMAGE_SHAPE
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != height * width * channels
    ):
        described = (
            f"{data.dtype} {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise SweepError(
            f"{path} is not a CIFAR batch: data is {described}, expected uint8 "
            f"(n, {height * width * channels})"
        )
    if not all(
        isinstance(x, int | np.integer) and not isinstance(x, bool) for x in labels
    ):
        raise SweepError(f"{path}: labels must be integers")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(data):
        raise SweepError(f"{path}: {len(data)} images but {len(labels)} labels")
    # Rows are planar: 1024 red, 1024 green, 1024 blue values.
    images = data.reshape(-1, channels, height, width).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _load_cifar_batches(folder: pathlib.Path) -> _Arrays:
    numbers = sorted(
        int(m.group(1))
        for p in folder.iterdir()
        if (m := re.fullmatch(r"data_batch_(\d+)", p.name))
    )
    if not numbers or numbers != list(range(1, len(numbers) + 1)):
        raise SweepError(
            f"{folder}: expected data_batch_1..N, found batches {numbers or 'none'}"
        )
    for name in ("test_batch", "batches.meta"):
        if not (folder / name).is_file():
            raise SweepError(f"{folder} has no {name}")
    meta = _unpickle_dict(folder / "batches.meta")
    names = meta.get("label_names")
    if isinstance(names, list):
        names = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
    if (
        not isinstance(names, list)
        or not names
        or not all(isinstance(n, str) for n in names)
    ):
        raise SweepError(
            f"{folder / 'batches.meta'} is not CIFAR metadata: no label_names list"
        )
    out = []
    for paths in (
        [folder / f"data_batch_{i}" for i in numbers],
        [folder / "test_batch"],
    ):
        batches = [_read_batch(p) for p in paths]
        for p, (_, labels) in zip(paths, batches, strict=True):
            _checked_labels(labels, len(names), str(p))
        out.append(np.concatenate([b[0] for b in batches]))
        out.append(np.concatenate([b[1] for b in batches]).astype(np.int32))
    return _Arrays(*out, class_names=tuple(names))


# Image folders: ROOT/{train,test}/<class>/*.png.


def _load_image_folder(root: pathlib.Path, cache: pathlib.Path) -> _Arrays:
    class_dirs = sorted(p for p in (root / "train").iterdir() if p.is_dir())
    names = tuple(p.name for p in class_dirs)
    if not (root / "test").is_dir():
        raise SweepError(f"{root} has a train/ folder but no test/ folder")
    unknown = sorted(
        p.name for p in (root / "test").iterdir() if p.is_dir() and p.name not in names
    )
    if unknown:
        raise SweepError(
            f"{root / 'test'} has class folder(s) {unknown} that train/ does not"
        )
    listing = {}
    for split in ("train", "test"):
        files, labels = [], []
        for label, name in enumerate(names):
            folder = root / split / name
            found = (
                sorted(
                    p
                    for p in folder.iterdir()
                    if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file()
                )
                if folder.is_dir()
                else []
            )
            if split == "train" and not found:
                raise SweepError(f"{folder} holds no .jpg/.jpeg/.png images")
            files += found
            labels += [label] * len(found)
        if not files:
            raise SweepError(f"{root / split} holds no .jpg/.jpeg/.png images")
        listing[split] = (files, np.asarray(labels, dtype=np.int32))

    def build() -> _Arrays:
        out = []
        for files, labels in listing.values():
            blobs = [p.read_bytes() for p in files]
            out += [_decode_images(blobs, lambda i, f=files: str(f[i])), labels]
        return _Arrays(*out, class_names=names)

    all_files = listing["train"][0] + listing["test"][0]
    return _cached("folder", root, all_files, cache, build)


# The real download: tfds if installed, else the canonical tarball.


def _load_download(cache: pathlib.Path) -> Dataset:
    url = os.environ.get("SWEEP_CIFAR_URL") or None
    if url is None and not os.environ.get("SWEEP_NO_TFDS"):
        try:
            import tensorflow_datasets as tfds
        except ImportError:
            pass
        else:
            return _dataset(_load_tfds(tfds), "download:tfds")
    md5 = CIFAR_MD5
    if url is not None and os.environ.get("SWEEP_CIFAR_MD5"):
        md5 = os.environ["SWEEP_CIFAR_MD5"].strip().lower()
        if not re.fullmatch(r"[0-9a-f]{32}", md5):
            raise SweepError(f"SWEEP_CIFAR_MD5={md5!r} is not an md5 hex digest")
    url = url or CIFAR_URL
    # Keyed by checksum, so a different archive never reuses this extraction,
    # and a finished extraction needs no network at all.
    home = cache / f"cifar-10-python-{md5[:12]}"
    folder = home / _BATCHES_DIR
    if not folder.is_dir():
        _download_and_extract(url, md5, home)
    return _dataset(_load_cifar_batches(folder), f"download:{url}")


def _load_tfds(tfds: Any) -> _Arrays:
    try:
        (train, test), info = tfds.load(
            "cifar10",
            split=["train", "test"],
            batch_size=-1,
            as_supervised=True,
            with_info=True,
        )
        (tr_x, tr_y), (te_x, te_y) = tfds.as_numpy((train, test))
    except Exception as e:  # tfds wraps network and disk errors in many types
        raise SweepError(_NO_DOWNLOAD.format(reason=_one_line(e))) from None
    return _Arrays(
        np.asarray(tr_x, np.uint8),
        np.asarray(tr_y, np.int64),
        np.asarray(te_x, np.uint8),
        np.asarray(te_y, np.int64),
        tuple(info.features["label"].names),
    )


def _download_and_extract(url: str, md5: str, home: pathlib.Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=home, suffix=".tar.gz.part")
    tmp = pathlib.Path(tmp_name)
    try:
        digest = hashlib.md5()
        try:
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(url, timeout=60) as response,
            ):
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except urllib.error.URLError as e:
            raise SweepError(_NO_DOWNLOAD.format(reason=_one_line(e.reason))) from None
        except (OSError, ValueError) as e:  # timeouts, resets, bad URLs
            raise SweepError(_NO_DOWNLOAD.format(reason=_one_line(e))) from None
        if digest.hexdigest() != md5:
            raise SweepError(
                f"{url} downloaded with md5 {digest.hexdigest()}, expected {md5}; "
                "refusing to use it"
            )
        _extract_batches(tmp, home, url)
    finally:
        tmp.unlink(missing_ok=True)


def _extract_batches(archive: pathlib.Path, home: pathlib.Path, url: str) -> None:
    """Extracts cifar-10-batches-py/* only, refusing any other member."""
    staging = pathlib.Path(tempfile.mkdtemp(dir=home, prefix="extract-"))
    try:
        (staging / _BATCHES_DIR).mkdir()
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    parts = pathlib.PurePosixPath(member.name).parts
                    inside = (
                        not member.name.startswith("/")
                        and parts[:1] == (_BATCHES_DIR,)
                        and ".." not in parts
                    )
                    if inside and member.isdir() and len(parts) == 1:
                        continue
                    if not (inside and member.isfile() and len(parts) == 2):
                        raise SweepError(
                            f"{url}: refusing archive member {member.name!r} "
                            f"(only files directly under {_BATCHES_DIR}/ are allowed)"
                        )
                    source = tar.extractfile(member)
                    with source, open(staging / _BATCHES_DIR / parts[1], "wb") as out:
                        shutil.copyfileobj(source, out)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise SweepError(
                f"{url} is not a readable CIFAR-10 archive ({_one_line(e)})"
            ) from None
        try:
            os.replace(staging / _BATCHES_DIR, home / _BATCHES_DIR)
        except OSError:
            # Another process finished first; its copy is as good as ours.
            if not (home / _BATCHES_DIR).is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _frozen(a: np.ndarray) -> np.ndarray:
    """A read-only view: the caller's own array stays as writeable as it was."""
    view = np.ascontiguousarray(a).view()
    view.flags.writeable = False
    return view


def _one_line(e: object) -> str:
    return " ".join(str(e).split()) or type(e).__name__
