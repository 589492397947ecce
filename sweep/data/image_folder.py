"""Image folders: ROOT/{train,test}/<class>/*.png (or .jpg/.jpeg)."""

from __future__ import annotations

import pathlib

import numpy as np

from sweep.data import cache as cache_lib
from sweep.data.dataset import Arrays
from sweep.data.decode import decode_images
from sweep.errors import SweepError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def find(path: pathlib.Path) -> pathlib.Path | None:
    """The root, when it holds train/<class>/ folders."""
    train = path / "train"
    if path.is_dir() and train.is_dir() and any(p.is_dir() for p in train.iterdir()):
        return path
    return None


def read(root: pathlib.Path, cache: pathlib.Path) -> Arrays:
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
                    if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
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

    def build() -> Arrays:
        out = []
        for files, labels in listing.values():
            blobs = [p.read_bytes() for p in files]
            out += [decode_images(blobs, lambda i, f=files: str(f[i])), labels]
        return Arrays(*out, class_names=names)

    all_files = listing["train"][0] + listing["test"][0]
    return cache_lib.cached("folder", root, all_files, cache, build)


# The real download: tfds if installed, else the canonical tarball.
