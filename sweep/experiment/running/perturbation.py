"""The clean-label attack's perturbed images, made once per sweep and kept.

Before a clean-label sweep trains, its driver trains the surrogate (or finds
it cached) and perturbs every image any poisoned replica stamps
(`attacks.clean_label`), and writes them beside the results as
`perturbed.npz` (training indices, uint8 images, how they were made). Every
later run of the sweep (a resumed one, a Ray task, `verify`) reads that file,
so a continued sweep trains on the very same pixels. Its hash goes into the
manifest (`attack.perturbation.perturbed_hash`).
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np

from sweep import results
from sweep.data.hashing import array_hash, index_hash
from sweep.errors import SweepError
from sweep.experiment.attacks import clean_label
from sweep.experiment.attacks.backdoors import Perturbed
from sweep.experiment.prepare import Prepared

PERTURBED = "perturbed.npz"


def perturbed_hash(index: np.ndarray, images: np.ndarray) -> str:
    return array_hash(np.asarray(index, np.int64), np.asarray(images, np.uint8))


def read(path: Path) -> Perturbed | None:
    """The stored perturbation, or None when there is none or it is unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return Perturbed(np.asarray(z["index"], np.int64), np.asarray(z["images"]),
                             json.loads(str(z["info"])))
    except (OSError, ValueError, KeyError):
        return None


def write(path: Path, perturbed: Perturbed) -> None:
    buf = io.BytesIO()
    np.savez(buf, index=perturbed.index, images=perturbed.images,
             info=np.array(json.dumps(perturbed.info)))
    results.atomic_write_bytes(path, buf.getvalue())


def attach(p: Prepared, *, recorded: dict | None = None, log=None,
           compute: bool = True) -> Prepared:
    """The sweep with its clean-label perturbation; `p` itself for any other.

    Args:
      p: a prepared sweep.
      recorded: the manifest's `attack.perturbation` of an earlier run, if any:
        the perturbation must hash as it records.
      log: status lines (training the surrogate, perturbing).
      compute: make the perturbation when the results folder lacks it (the
        driver); False refuses instead (a Ray task, which must train on the
        driver's pixels).
    Returns:
      `p` with `perturbed` set; its `info` is the manifest's entry.
    """
    if p.backdoor is None or not p.backdoor.perturbs:
        return p
    index = p.perturbation_index()
    path = p.out / PERTURBED
    want = (recorded or {}).get("perturbed_hash")
    found = read(path) if path.is_file() else None
    if found is not None and np.array_equal(found.index, index) and (
            want is None or perturbed_hash(found.index, found.images) == want):
        return dataclasses.replace(p, perturbed=found)
    if not compute:
        raise SweepError(f"{path} is missing or is not this sweep's perturbation; "
                         "run the sweep's command again on its driver")
    made = make(p, index, log=log)
    got = made.info["perturbed_hash"]
    if want is not None and got != want:
        raise SweepError(
            f"{path} was lost and the perturbation made again differs from the one "
            f"this sweep recorded ({want[:19]} vs {got[:19]}), so its finished "
            "replicas cannot be continued bit for bit; use another --out")
    write(path, made)
    return dataclasses.replace(p, perturbed=made)


def make(p: Prepared, index: np.ndarray, *, log=None) -> Perturbed:
    """Train (or find) the surrogate, then perturb the images at `index`."""
    c, bd = p.config, p.backdoor
    recipe = p.recipe()
    key = clean_label.surrogate_key(
        data_hash=p.dataset.content_hash, subset_hash=index_hash(p.train_rows),
        recipe=recipe, epochs=c.epochs, seed=c.poison_seed)
    params, surrogate = clean_label.train_surrogate(
        recipe, p.train_images, p.train_labels, p.dataset.test_images,
        p.dataset.test_labels, epochs=c.epochs, seed=c.poison_seed, key=key, log=log)
    if log is not None:
        log(f"clean-label: perturbing {len(index)} target images (PGD, eps "
            f"{bd.perturbation_eps}/255, {clean_label.PGD_STEPS} steps; surrogate "
            f"test accuracy {surrogate['test_accuracy']:.1f}%)")
    images = clean_label.perturb(params, p.train_images[index], p.train_labels[index],
                                 index, eps_levels=bd.perturbation_eps,
                                 seed=c.poison_seed)
    info = {**clean_label.settings(bd.perturbation_eps), "surrogate": surrogate,
            "surrogate_seed": c.poison_seed, "n_perturbed": int(len(index)),
            "file": PERTURBED, "perturbed_hash": perturbed_hash(index, images)}
    return Perturbed(index, images, info)
