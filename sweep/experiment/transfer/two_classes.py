"""The two-class data a transfer head is trained on, and its resized images.

`load` gives the two-class dataset a head sweep poisons: from the course
project's `ROOT/train/{cats,dogs}` + `ROOT/validation/{cats,dogs}` folders, or
any two classes of a dataset `sweep.data` reads.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
from typing import NamedTuple

import numpy as np
from PIL import Image

from sweep import data as data_lib
from sweep.data.classes import resolve_class
from sweep.errors import SweepError

COURSE_SIZE = 150  # the course project's target_size
COURSE_SPLITS = ("train", "validation")  # validation/ is the test split
_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class View(NamedTuple):
    dataset: data_lib.Dataset  # the two classes, labels 0/1, uint8 images
    full: data_lib.Dataset | None  # everything loaded (None for a course folder)
    class_ids: tuple[int, int]  # the two classes' ids in `full`


def is_course_folder(path: pathlib.Path) -> bool:
    return all((path / split).is_dir() for split in COURSE_SPLITS) and not (
        path / "test"
    ).is_dir()


def load(config) -> View:
    """The two-class dataset of a head sweep: `config.classes`, else source/target.

    Images are resized to `config.image_size` (150 for a course folder when not
    given) as Keras' `load_img(target_size=..., interpolation="bilinear")` does.
    """
    spec = config.data or os.environ.get("SWEEP_DATA") or None
    size = config.image_size
    path = pathlib.Path(spec).expanduser() if spec and spec != "sample" else None
    if path is not None and path.is_dir() and is_course_folder(path):
        full, names = None, None
        ds = load_course_folder(path, size or COURSE_SIZE)
        ids = (0, 1)
    else:
        full = data_lib.load(spec)
        names = full.class_names
        ds, ids = None, None
    wanted = config.classes or (config.source, config.target)
    if len(wanted) != 2:
        raise SweepError(f"--classes takes two classes, got {','.join(wanted)}")
    if full is not None:
        ids = tuple(resolve_class(c, names, plurals=True) for c in wanted)
        if ids[0] == ids[1]:
            raise SweepError(f"--classes names {names[ids[0]]!r} twice")
        ds = two_classes(full, ids)
    else:
        found = tuple(resolve_class(c, ds.class_names, plurals=True) for c in wanted)
        if found[0] == found[1]:
            raise SweepError(f"--classes names {ds.class_names[found[0]]!r} twice")
    for role in (config.source, config.target):
        resolve_class(role, ds.class_names, plurals=True)  # a clear line if it is not one of them
    if size is not None and ds.train_images.shape[1:3] != (size, size):
        ds = data_lib.dataset_from_arrays(
            resize(ds.train_images, size), ds.train_labels,
            resize(ds.test_images, size), ds.test_labels, ds.class_names,
            source=ds.source,
        )
    if config.test_size is not None:
        rows = data_lib.balanced_subset(ds.test_labels, config.test_size, seed=0)
        ds = data_lib.dataset_from_arrays(
            ds.train_images, ds.train_labels, ds.test_images[rows],
            ds.test_labels[rows], ds.class_names, source=ds.source,
        )
    return View(ds, full, ids)


def two_classes(ds: data_lib.Dataset, ids: tuple[int, int]) -> data_lib.Dataset:
    """The rows of two classes, relabelled 0 and 1 in the order given."""
    arrays = []
    for images, labels in ((ds.train_images, ds.train_labels),
                           (ds.test_images, ds.test_labels)):
        keep = np.flatnonzero(np.isin(labels, ids))
        arrays += [images[keep], (labels[keep] == ids[1]).astype(np.int32)]
    names = tuple(ds.class_names[i] for i in ids)
    return data_lib.dataset_from_arrays(*arrays, names, source=ds.source)


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size, size, 3), PIL bilinear as Keras' load_img."""
    return np.stack([
        np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR))
        for im in images
    ])


def load_image(path: pathlib.Path, size: int) -> np.ndarray:
    """One image as `keras.utils.load_img(path, target_size=(size, size),
    interpolation="bilinear")` gives it: RGB, resized only when the size differs."""
    with Image.open(io.BytesIO(path.read_bytes())) as im:
        if im.format not in ("JPEG", "PNG", "BMP", "WEBP"):
            raise SweepError(f"{path} is not a JPEG/PNG/BMP/WebP image")
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return np.asarray(im, np.uint8)


def load_course_folder(root: pathlib.Path, size: int) -> data_lib.Dataset:
    """ROOT/train/<class>/ and ROOT/validation/<class>/, exactly two classes."""
    names = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
    if len(names) != 2:
        raise SweepError(
            f"{root / 'train'} must hold two class folders (e.g. cats, dogs), "
            f"found {len(names)}: {', '.join(names) or 'none'}"
        )
    arrays = []
    for split in COURSE_SPLITS:
        images, labels = [], []
        for label, name in enumerate(names):
            folder = root / split / name
            files = sorted(p for p in folder.iterdir()
                           if p.suffix.lower() in _SUFFIXES) if folder.is_dir() else []
            if not files:
                raise SweepError(f"{folder} holds no images")
            images += [load_image(p, size) for p in files]
            labels += [label] * len(files)
        arrays += [np.stack(images), np.asarray(labels, np.int32)]
    return data_lib.dataset_from_arrays(*arrays, names, source=str(root.resolve()))


def with_features(ds: data_lib.Dataset, test_features: np.ndarray) -> data_lib.Dataset:
    """The view with its test images replaced by their features (for the engine)."""
    return dataclasses.replace(ds, test_images=test_features)
