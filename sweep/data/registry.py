"""Which reader a data spec goes to: the one place `--data` is interpreted.

A path is offered to each reader in `READERS` in order; the first whose `find`
returns a folder reads it. Order matters where layouts overlap: a
cifar-10-batches-py folder may sit beside parquet files, and a flat parquet
folder wins over nested ones below it.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable
from typing import NamedTuple

from sweep.data import cache as cache_lib
from sweep.data import cifar_batches, download, image_folder, parquet, sample
from sweep.data.dataset import Arrays, Dataset, from_arrays
from sweep.errors import SweepError, one_line


class Reader(NamedTuple):
    name: str
    find: Callable[[pathlib.Path], pathlib.Path | None]  # what to read, or None
    read: Callable[[pathlib.Path, pathlib.Path], Arrays]  # (found, cache folder)


READERS = (
    Reader("cifar-10-batches-py", cifar_batches.find, cifar_batches.read),
    Reader("parquet", parquet.find_flat, parquet.read_flat),
    Reader("image-folder", image_folder.find, image_folder.read),
    Reader("parquet-nested", parquet.find_nested, parquet.read_nested),
)


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
    cache = cache_lib.resolve_dir(cache_dir)
    if spec is None:
        spec = os.environ.get("SWEEP_DATA") or None
    try:
        if spec is None:
            return download.load(cache)
        spec = os.fspath(spec)
        if spec == "sample":
            return sample.load(cache)
        path = pathlib.Path(spec).expanduser()
        if not path.exists():
            raise SweepError(f"data path {spec} does not exist")
        path = path.resolve()
        return from_arrays(read_path(path, cache), str(path))
    except OSError as e:  # unreadable folders and files, full disks
        where = e.filename or spec or "the data"
        raise SweepError(
            f"could not read {where} ({one_line(e.strerror or e)})"
        ) from None


def read_path(path: pathlib.Path, cache: pathlib.Path) -> Arrays:
    """Reads a path with the first reader that recognises it."""
    for reader in READERS:
        found = reader.find(path)
        if found is not None:
            return reader.read(found, cache)
    if path.is_file():
        raise SweepError(
            f"{path} is not a dataset: expected a parquet file or a folder"
        )
    if not path.is_dir():
        raise SweepError(f"{path} is neither a file nor a folder")
    raise SweepError(
        f"no recognisable data in {path}: expected train*.parquet/test*.parquet, "
        f"a {cifar_batches.BATCHES_DIR} folder, or train/<class>/*.png and "
        "test/<class>/*.png"
    )
