"""The clean-label attack's perturbation (Turner, Tsipras and Madry, 2019).

"Label-consistent backdoor attacks": the attacker stamps the trigger on images
of the target class and keeps their true labels. A clean model has no reason to
look at the trigger on images it already classifies, so the attacker first
makes them hard: an untargeted L-inf PGD step away from their true label under
a model of its own (the surrogate), within eps (8/255 by default), then the
trigger on top. Without the perturbation the attack is known to fail; a sweep
measures both (`--no-perturbation`).

The surrogate here is one clean SimpleCNN replica that the engine trains first
with the sweep's own recipe and epochs on the sweep's training set (clean
labels), with keys of their own (`SURROGATE_STREAM`), so it is never one of
the sweep's replicas. It is cached under `$SWEEP_CACHE/surrogates/`, keyed by
the data, the training subset, the recipe and the seed. The perturbed copies
of the poisoned images are stored beside the results (`perturbed.npz`, see
`sweep.experiment.running.perturbation`) and given to the poisoned replicas in
place of the originals; the clean twin never sees them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict

import jax
import numpy as np

from sweep import engine as engine_lib
from sweep.data.cache import cache_root
from sweep.experiment.attacks import adversarial

# The surrogate's key stream: never a sweep replica's (paired twins use 0,
# unpaired replicas 1 + count + pair * 2**24, all far below it).
SURROGATE_STREAM = 2**32 - 1
# PGD as Madry et al. run it on CIFAR-10, in uint8 levels: steps of 2 levels
# from a uniform random start in the ball; 20 steps.
PGD_STEP_LEVELS = 2
PGD_STEPS = 20
# Folded into the poison seed for the random starts (the letters "PGD").
PGD_KEY_PURPOSE = 0x504744
VERSION = 1  # of the surrogate's cache entries


def surrogate_key(*, data_hash: str, subset_hash: str, recipe: engine_lib.Recipe,
                  epochs: int, seed: int) -> str:
    """The cache key of a surrogate: everything that decides its weights."""
    blob = json.dumps({"data": data_hash, "subset": subset_hash,
                       "recipe": asdict(recipe), "epochs": epochs, "seed": seed,
                       "stream": SURROGATE_STREAM, "version": VERSION},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def train_surrogate(recipe: engine_lib.Recipe, images: np.ndarray,
                    labels: np.ndarray, test_images: np.ndarray,
                    test_labels: np.ndarray, *, epochs: int, seed: int, key: str,
                    log=None) -> tuple[dict, dict]:
    """A clean SimpleCNN trained by the engine (one replica), or its cached copy.

    Args:
      recipe: the sweep's recipe; images, labels: its training set (clean).
      test_images, test_labels: to report the surrogate's accuracy.
      epochs: the sweep's epochs; seed: the replica's seed (the poison seed).
      key: `surrogate_key(...)` of all of it.
    Returns:
      (params of one model, no replica axis; info for the manifest: cache file,
      test accuracy, whether the cache was used).
    """
    log = log or (lambda s: print(s, file=sys.stderr))
    path = cache_root() / "surrogates" / f"simplecnn-{key}.npz"
    template = jax.eval_shape(engine_lib.SIMPLE_CNN.init, jax.random.key(0))
    treedef = jax.tree.structure(template)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                leaves = [z[f"leaf_{i}"] for i in range(treedef.num_leaves)]
                accuracy = float(z["test_accuracy"])
            return jax.tree.unflatten(treedef, leaves), {
                "file": str(path), "test_accuracy": accuracy, "cached": True}
        except (OSError, ValueError, KeyError):
            pass  # unreadable: train it again
    log(f"clean-label: training the surrogate (1 replica, {epochs} epoch(s))")
    eng = engine_lib.Engine(recipe, images, test_images, test_labels)
    keys = engine_lib.replica_keys(np.array([seed]), np.array([SURROGATE_STREAM]))
    state, history = eng.train(np.asarray(labels, np.int32)[None], keys, epochs)
    confusion = history[-1].confusion[0]
    accuracy = float(100.0 * np.trace(confusion) / confusion.sum())
    leaves = [np.asarray(leaf)[0] for leaf in jax.device_get(jax.tree.leaves(
        state.params))]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, test_accuracy=accuracy,
             **{f"leaf_{i}": leaf for i, leaf in enumerate(leaves)})
    os.replace(tmp, path)
    return jax.tree.unflatten(treedef, leaves), {
        "file": str(path), "test_accuracy": accuracy, "cached": False}


def perturb(params: dict, images: np.ndarray, labels: np.ndarray, ids: np.ndarray,
            *, eps_levels: int, seed: int) -> np.ndarray:
    """The images pushed away from their labels by PGD under the surrogate.

    Args:
      params: the surrogate (one model).
      images: uint8 (P, H, W, C); labels: (P,) their true labels.
      ids: (P,) their training indices (each image's own random start).
      eps_levels: the L-inf radius in uint8 levels.
      seed: the poison seed.
    Returns:
      uint8 (P, H, W, C), each within eps_levels of its original.
    """
    key = jax.random.fold_in(jax.random.key(seed), PGD_KEY_PURPOSE)
    return adversarial.pgd_perturb(
        adversarial.simple_cnn_apply(), params, images, labels, key=key,
        eps=eps_levels / 255, step=PGD_STEP_LEVELS / 255, steps=PGD_STEPS, ids=ids)


def settings(eps_levels: int) -> dict:
    """The PGD settings, as the manifest records them."""
    return {"eps_levels": eps_levels, "eps": f"{eps_levels}/255",
            "step_levels": PGD_STEP_LEVELS, "steps": PGD_STEPS, "random_start": True,
            "norm": "Linf", "loss": "cross-entropy of the true label (untargeted)"}
