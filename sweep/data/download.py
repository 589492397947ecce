"""The real CIFAR-10 download: tfds if installed, else the canonical tarball.

The tarball is checked against its md5 and only cifar-10-batches-py/* is
extracted, so a tampered archive can neither be used nor write elsewhere.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from sweep.data import cifar_batches
from sweep.data.cifar_batches import BATCHES_DIR
from sweep.data.dataset import Arrays, Dataset, from_arrays
from sweep.errors import SweepError, one_line

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
_NO_DOWNLOAD = (
    "no data given and CIFAR-10 could not be downloaded ({reason}); pass --data "
    "PATH (a parquet folder, cifar-10-batches-py, or an image folder), or --data "
    "sample"
)


def load(cache: pathlib.Path) -> Dataset:
    url = os.environ.get("SWEEP_CIFAR_URL") or None
    if url is None and not os.environ.get("SWEEP_NO_TFDS"):
        try:
            import tensorflow_datasets as tfds
        except ImportError:
            pass
        else:
            return from_arrays(_load_tfds(tfds), "download:tfds")
    md5 = CIFAR_MD5
    if url is not None and os.environ.get("SWEEP_CIFAR_MD5"):
        md5 = os.environ["SWEEP_CIFAR_MD5"].strip().lower()
        if not re.fullmatch(r"[0-9a-f]{32}", md5):
            raise SweepError(f"SWEEP_CIFAR_MD5={md5!r} is not an md5 hex digest")
    url = url or CIFAR_URL
    # Keyed by checksum, so a different archive never reuses this extraction,
    # and a finished extraction needs no network at all.
    home = cache / f"cifar-10-python-{md5[:12]}"
    folder = home / BATCHES_DIR
    if not folder.is_dir():
        _download_and_extract(url, md5, home)
    return from_arrays(cifar_batches.load(folder), f"download:{url}")


def _load_tfds(tfds: Any) -> Arrays:
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
        raise SweepError(_NO_DOWNLOAD.format(reason=one_line(e))) from None
    return Arrays(
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
            raise SweepError(_NO_DOWNLOAD.format(reason=one_line(e.reason))) from None
        except (OSError, ValueError) as e:  # timeouts, resets, bad URLs
            raise SweepError(_NO_DOWNLOAD.format(reason=one_line(e))) from None
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
        (staging / BATCHES_DIR).mkdir()
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    parts = pathlib.PurePosixPath(member.name).parts
                    inside = (
                        not member.name.startswith("/")
                        and parts[:1] == (BATCHES_DIR,)
                        and ".." not in parts
                    )
                    if inside and member.isdir() and len(parts) == 1:
                        continue
                    if not (inside and member.isfile() and len(parts) == 2):
                        raise SweepError(
                            f"{url}: refusing archive member {member.name!r} "
                            f"(only files directly under {BATCHES_DIR}/ are allowed)"
                        )
                    source = tar.extractfile(member)
                    with source, open(staging / BATCHES_DIR / parts[1], "wb") as out:
                        shutil.copyfileobj(source, out)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise SweepError(
                f"{url} is not a readable CIFAR-10 archive ({one_line(e)})"
            ) from None
        try:
            os.replace(staging / BATCHES_DIR, home / BATCHES_DIR)
        except OSError:
            # Another process finished first; its copy is as good as ours.
            if not (home / BATCHES_DIR).is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
