"""The decoded-array cache: one .npz per source, rebuilt when its files change."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
from collections.abc import Callable, Sequence

import numpy as np

from sweep.data.dataset import IMAGE_SHAPE, Arrays

CACHE_VERSION = 1  # bump when the cached arrays' meaning changes


def cache_root() -> pathlib.Path:
    """Where sweep caches anything: $SWEEP_CACHE, else ~/.cache/sweep."""
    return pathlib.Path(os.environ.get("SWEEP_CACHE") or "~/.cache/sweep").expanduser()


def resolve_dir(cache_dir: str | os.PathLike | None) -> pathlib.Path:
    """The cache folder: `cache_dir`, else `cache_root()`."""
    if cache_dir is None:
        return cache_root()
    return pathlib.Path(cache_dir).expanduser()


def cached(
    kind: str,
    root: pathlib.Path,
    files: Sequence[pathlib.Path],
    cache: pathlib.Path,
    build: Callable[[], Arrays],
) -> Arrays:
    """Returns build(), reusing an .npz from an earlier call on unchanged files.

    One cache file per (kind, root); it records the files' resolved paths, sizes
    and mtimes, and is rebuilt when they differ or the file cannot be read.
    """
    stats = [(str(f.resolve()), *_size_mtime(f)) for f in files]
    signature = json.dumps([CACHE_VERSION, kind, stats])
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


def _read_cache(path: pathlib.Path, signature: str) -> Arrays | None:
    if not path.is_file():
        return None
    # Anything wrong with the cache (truncated, foreign, old) means "rebuild":
    # it only ever holds what the source files can give again.
    try:
        # Our own handle: np.load leaks its file when the zip is broken.
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            if str(npz["signature"]) != signature:
                return None
            arrays = Arrays(
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


def _write_cache(path: pathlib.Path, signature: str, arrays: Arrays) -> None:
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
