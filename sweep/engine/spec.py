"""What a replica is, to the engine: its recipe, keys, state and model spec.

The types every other engine module shares. A replica is "these training labels,
these keys" (and, for per-replica training subsets, these images; for a trigger
backdoor, these images stamped); nothing here knows of poisoning or of where
the data came from.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


class TrainState(NamedTuple):
    params: dict  # the model's pytree, every leaf (R, ...)
    opt_state: optax.OptState  # per replica: every leaf (R, ...), Adam's count (R,)
    step: jax.Array  # () int32, optimizer steps taken so far


class ReplicaKeys(NamedTuple):
    init: jax.Array  # (R,) keys: initial weights
    shuffle: jax.Array  # (R,) keys: data order, folded with the epoch
    dropout: jax.Array  # (R,) keys: dropout masks, folded with the step


class EpochMetrics(NamedTuple):
    train_loss: np.ndarray  # (R,) mean cross-entropy over the epoch's batches
    train_accuracy: np.ndarray  # (R,) percent, measured with dropout on
    test_loss: np.ndarray  # (R,) mean cross-entropy over the test set
    confusion: np.ndarray  # (R, K, K) test counts, [true, predicted]
    # (R, K, K) the same over the test set with the trigger stamped on every
    # image; None where the engine has no trigger (every label-flip sweep).
    stamped_confusion: np.ndarray | None = None


class ModelSpec(NamedTuple):
    """What the engine needs to know about a model: init and apply over a pytree.

    The engine holds the stored inputs (uint8 images, or float features for a
    head on a frozen backbone) on the device and asks the spec how to turn a
    gathered batch into model inputs, the logits into a loss and a class.
    """

    init: Callable  # (key) -> one replica's params
    make_apply: Callable  # (recipe) -> apply(params, x, *, dropout=, dropout_key=)
    #   over replica-batched params and inputs (R, B, ...) -> logits (R, B, L)
    prepare: Callable  # stored inputs (..., B, ...) -> float model inputs
    loss: Callable  # (logits (R, B, L), labels (R, B) int) -> (R, B) per example
    predict: Callable  # logits (R, B, L) -> (R, B) class ids
    optimizer: Callable  # (lr) -> optax.GradientTransformation
    # apply also takes inputs with a replica axis of 1, one input that every
    # replica reads (evaluation's test batch), and saves work on it.
    shares_input: bool = False



class Stamps(NamedTuple):
    """Which training images carry the trigger, per replica (trigger backdoors).

    The stored images stay one uint8 copy on the device; a replica's batch is
    gathered from it and the engine's trigger is stamped on the images its
    mask selects (`sweep.engine.triggers.gather_stamped`). An all-False mask
    (the clean twin) trains on exactly the images a label-flip replica sees.
    `rows` lets a replica read another stored row in place of training image i
    (the clean-label attack's perturbed copies, stored after the N training
    images); None reads row i for image i.
    """

    mask: jax.Array  # (R, N) bool: replica r trains on image i stamped
    rows: jax.Array | None = None  # (R, N) int32: the stored row r reads as image i


class Subsets(NamedTuple):
    """Which training images each replica trains on (out-of-fold models, repair).

    Row r lists replica r's images; entries at or past `length[r]` are padding
    (any valid index) and are never trained on. All rows share the width M, so
    one compiled epoch serves replicas whose subsets differ in size.
    """

    index: jax.Array  # (R, M) int32 indices into the training set
    length: jax.Array  # (R,) int32 images replica r trains on, <= M


@dataclass(frozen=True)
class Recipe:
    """The fixed settings one compiled sweep is built for.

    A sweep builds it from its Config, field by field of the same name
    (`sweep.experiment.prepare.recipe_for`); the defaults are the reference recipe, the same
    as Config's (tests/test_layout.py), so the engine also runs on its own.
    """

    n_train: int
    n_classes: int
    batch_size: int = 128
    lr: float = 1e-3
    dropout: float = 0.5
    kernel: str = "auto"
    compute_dtype: str = "float32"
    eval_batch_size: int = 1000
    optimizer: str | None = None  # an `optim` spec; None: the reference Adam

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n_train / self.batch_size)


def replica_keys(seeds: np.ndarray, streams: np.ndarray) -> ReplicaKeys:
    """Keys for replicas from their seed and stream.

    Paired replicas of one seed pass the same stream (0), so they share every key;
    unpaired replicas pass distinct streams. Keys never depend on the poison.
    """

    def one(seed, stream):
        root = jax.random.fold_in(jax.random.key(seed), stream)
        init_key, shuffle_key, dropout_key = jax.random.split(root, 3)
        return init_key, shuffle_key, dropout_key

    seeds = jnp.asarray(seeds, jnp.uint32)
    streams = jnp.asarray(streams, jnp.uint32)
    return ReplicaKeys(*jax.vmap(one)(seeds, streams))
