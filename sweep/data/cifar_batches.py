"""cifar-10-batches-py: the canonical pickles, read without running anything in them.

Pickles go through an unpickler that only resolves numpy's array-building
globals, so a hostile file cannot execute code.
"""

from __future__ import annotations

import io
import pathlib
import pickle
import re
from typing import Any

import numpy as np

from sweep.data.dataset import IMAGE_SHAPE, Arrays, checked_labels
from sweep.errors import SweepError, one_line

BATCHES_DIR = "cifar-10-batches-py"


def find(path: pathlib.Path) -> pathlib.Path | None:
    """The batches folder for a batch file, the folder itself, or its parent."""
    if path.is_file():
        if path.name in ("batches.meta", "test_batch") or path.name.startswith(
            "data_batch_"
        ):
            return path.parent
        return None
    if not path.is_dir():
        return None
    for candidate in (path, path / BATCHES_DIR):
        if any((candidate / f).is_file() for f in ("data_batch_1", "test_batch")):
            return candidate
    return None


def read(folder: pathlib.Path, cache: pathlib.Path | None = None) -> Arrays:
    """Reads data_batch_1..N and test_batch (pickles decode fast: no cache)."""
    return load(folder)


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
            f"{path} is not a CIFAR batch: unreadable pickle ({one_line(e)})"
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


def load(folder: pathlib.Path) -> Arrays:
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
            checked_labels(labels, len(names), str(p))
        out.append(np.concatenate([b[0] for b in batches]))
        out.append(np.concatenate([b[1] for b in batches]).astype(np.int32))
    return Arrays(*out, class_names=tuple(names))


# Image folders: ROOT/{train,test}/<class>/*.png.

