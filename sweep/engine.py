"""The engine: R replicas trained together, one compiled call per epoch.

It knows nothing of poisoning. A replica is "these training labels, these keys";
the images live on the device once, as uint8, and every batch is gathered there
from the replica's own shuffle of the training set.
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

from sweep import model, optim


class TrainState(NamedTuple):
    params: model.Params  # every leaf (R, ...)
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


@dataclass(frozen=True)
class Recipe:
    """The fixed settings one compiled sweep is built for.

    A sweep builds it from its Config, field by field of the same name
    (`sweep.pipeline.recipe_for`); the defaults are the reference recipe, the same
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


def optimizer(recipe: Recipe) -> optax.GradientTransformation:
    """The recipe's optax transform, applied to each replica on its own."""
    return optim.per_replica(optim.build(recipe.optimizer, recipe.lr))


def init_state(recipe: Recipe, init_keys: jax.Array) -> TrainState:
    params = jax.vmap(model.init)(init_keys)
    opt_state = optimizer(recipe).init(params)
    return TrainState(params, opt_state, jnp.zeros((), jnp.int32))


def epoch_batches(recipe: Recipe, shuffle_keys: jax.Array, epoch: jax.Array):
    """Each replica's batches for one epoch, like a shuffling DataLoader.

    Returns:
      indices (S, R, B) int32 into the training set, and mask (S, B) float32 that
      is 0 on the padding of the last, short batch (drop_last=False).
    """
    n, b, s = recipe.n_train, recipe.batch_size, recipe.steps_per_epoch
    perms = jax.vmap(lambda k: jax.random.permutation(jax.random.fold_in(k, epoch), n))(
        shuffle_keys
    )  # (R, N)
    pad = s * b - n
    perms = jnp.pad(perms, ((0, 0), (0, pad)))
    indices = perms.reshape(-1, s, b).transpose(1, 0, 2)
    mask = (jnp.arange(s * b) < n).astype(jnp.float32).reshape(s, b)
    return indices, mask


def make_train_step(recipe: Recipe):
    """`(state, images, labels, dropout_keys, idx, mask) -> (state, (loss, correct))`.

    One optimizer step for every replica on its own batch: idx (R, B) indexes the
    training images, mask (B,) is 0 on padding. Loss and correct are per-replica
    sums over the batch (R,).
    """
    layers = model.batched_layers(recipe.kernel, recipe.compute_dtype)
    tx = optimizer(recipe)

    def loss_fn(params, x, y, mask, dropout_keys):
        logits = model.apply(
            params, x, layers=layers, dropout=recipe.dropout, dropout_key=dropout_keys
        )
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)  # (R, B)
        # Each replica's loss is its own batch mean; summing over replicas keeps
        # their gradients separate because no parameter is shared.
        per_replica = (ce * mask[None]).sum(-1) / mask.sum()
        return per_replica.sum(), (ce, logits)

    def train_step(state, images, labels, dropout_keys, idx, mask):
        x = model.normalize(images[idx])  # (R, B, H, W, C)
        y = jnp.take_along_axis(labels, idx, axis=1)  # (R, B)
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(dropout_keys, state.step)
        grads, (ce, logits) = jax.grad(loss_fn, has_aux=True)(
            state.params, x, y, mask, keys
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        loss_sum = (ce * mask[None]).sum(-1)
        correct = ((logits.argmax(-1) == y) * mask[None]).sum(-1)
        return TrainState(params, opt_state, state.step + 1), (loss_sum, correct)

    return train_step


# Step-level progress reports per epoch; only where epochs are long (CPU).
TICKS_PER_EPOCH = 20


def make_train_epoch(recipe: Recipe, tick=None):
    """A jitted `(state, images, labels, keys, epoch) -> (state, loss, correct)`.

    images: uint8 (N, H, W, C), shared; labels: int32 (R, N); keys: ReplicaKeys;
    epoch: () int32. Returns per-replica summed loss and correct counts (R,).
    `tick(steps_done)`, if given, is called from inside the compiled epoch about
    TICKS_PER_EPOCH times, so a progress bar moves during a minutes-long epoch;
    it only observes, so results are the same with or without it.
    """
    train_step = make_train_step(recipe)
    s = recipe.steps_per_epoch
    every = max(1, s // TICKS_PER_EPOCH)

    def train_epoch(state, images, labels, keys, epoch):
        indices, mask = epoch_batches(recipe, keys.shuffle, epoch)

        def body(state, batch):
            idx, m, i = batch
            out = train_step(state, images, labels, keys.dropout, idx, m)
            if tick is not None:
                jax.lax.cond(
                    (i + 1) % every == 0,
                    lambda i: jax.debug.callback(tick, i + 1),
                    lambda i: None,
                    i,
                )
            return out

        xs = (indices, mask, jnp.arange(s, dtype=jnp.int32))
        state, (loss_sum, correct) = jax.lax.scan(body, state, xs)
        return state, loss_sum.sum(0), correct.sum(0)

    donate = () if jax.default_backend() == "cpu" else (0,)
    return jax.jit(train_epoch, donate_argnums=donate)


def make_evaluate(recipe: Recipe):
    """A jitted `(params, images, labels) -> (loss_sum (R,), confusion (R, K, K))`.

    images/labels: the test set padded to a multiple of the eval batch, with
    label -1 on the padding (see `pad_eval_set`).
    """
    layers = model.batched_layers(recipe.kernel, recipe.compute_dtype)
    k = recipe.n_classes

    def evaluate(params, images, labels):
        r = jax.tree.leaves(params)[0].shape[0]
        eb = recipe.eval_batch_size
        xs = images.reshape(-1, eb, *images.shape[1:])
        ys = labels.reshape(-1, eb)

        def body(carry, batch):
            loss_sum, confusion = carry
            x_u8, y = batch
            x = jnp.broadcast_to(model.normalize(x_u8), (r, *x_u8.shape))
            logits = model.apply(params, x, layers=layers)  # (R, EB, K)
            valid = y >= 0
            y_r = jnp.broadcast_to(jnp.where(valid, y, 0), (r, eb))
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, y_r)
            loss_sum = loss_sum + (ce * valid[None]).sum(-1)
            # Float counts: integer matmuls are slow or missing on accelerators,
            # and f32 holds whole numbers exactly far past any test set size.
            pred = jax.nn.one_hot(logits.argmax(-1), k, dtype=jnp.float32)
            true = jax.nn.one_hot(y, k, dtype=jnp.float32)  # -1 -> all zeros
            confusion = confusion + jnp.einsum("bi,rbj->rij", true, pred)
            return (loss_sum, confusion), None

        init = (jnp.zeros((r,), jnp.float32), jnp.zeros((r, k, k), jnp.float32))
        (loss_sum, confusion), _ = jax.lax.scan(body, init, (xs, ys))
        return loss_sum, confusion.astype(jnp.int32)

    return jax.jit(evaluate)


def pad_eval_set(
    images: np.ndarray, labels: np.ndarray, eval_batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pad the test set to whole eval batches; padded rows get label -1."""
    pad = -len(labels) % eval_batch_size
    images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels.astype(np.int32), np.full(pad, -1, np.int32)])
    return images, labels


class Engine:
    """Compiled train/eval functions plus the device-resident data they read.

    Build one per sweep; every chunk of the same size reuses the compilation.
    """

    def __init__(
        self,
        recipe: Recipe,
        train_images: np.ndarray,
        test_images: np.ndarray,
        test_labels: np.ndarray,
        *,
        on_step: Callable[[int], None] | None = None,
        devices=None,
    ):
        """`on_step(steps_done_in_epoch)`, if given, observes training progress.

        The tick is compiled in on CPU only, where one epoch can take minutes
        (always, so the compiled epoch is the same with or without an observer).
        `devices`: shard the replica axis over these (see `sweep.sharding`); None
        or one device is the plain single-device engine.
        """
        self.recipe = recipe
        self.sharding = None
        if devices is not None and len(devices) > 1:
            from sweep.sharding import ReplicaSharding

            self.sharding = ReplicaSharding(devices)
        put = jax.device_put if self.sharding is None else self.sharding.put_shared

        def tick(steps_done) -> None:
            if on_step is not None:
                on_step(int(steps_done))

        self.train_epoch = make_train_epoch(
            recipe, tick if jax.default_backend() == "cpu" else None
        )
        self.init_state = jax.jit(lambda keys: init_state(recipe, keys))
        self.evaluate = make_evaluate(recipe)
        self.train_images = put(train_images)  # uint8, once (per device)
        test_x, test_y = pad_eval_set(test_images, test_labels, recipe.eval_batch_size)
        self.test_images = put(test_x)
        self.test_labels = put(test_y)
        self.n_test = len(test_labels)

    def init(self, keys: ReplicaKeys) -> TrainState:
        return self.place(self.init_state(keys.init), len(keys.init))

    def place(self, tree, r: int):
        """Per-replica arrays onto the device(s): sharded over the replica axis
        when the engine spans several devices, else as `jax.device_put`."""
        if self.sharding is None:
            return jax.device_put(tree)
        return self.sharding.put_replicas(tree, r)

    def run_epoch(
        self, state: TrainState, labels: jax.Array, keys: ReplicaKeys, epoch: int
    ) -> tuple[TrainState, EpochMetrics]:
        """Train one epoch (0-based `epoch`) and evaluate; metrics come to host."""
        state, loss_sum, correct = self.train_epoch(
            state, self.train_images, labels, keys, jnp.int32(epoch)
        )
        test_loss_sum, confusion = self.evaluate(
            state.params, self.test_images, self.test_labels
        )
        # One host transfer per epoch, of a few numbers per replica.
        loss_sum, correct, test_loss_sum, confusion = jax.device_get(
            (loss_sum, correct, test_loss_sum, confusion)
        )
        n = self.recipe.n_train
        return state, EpochMetrics(
            train_loss=loss_sum / n,
            train_accuracy=100.0 * correct / n,
            test_loss=test_loss_sum / self.n_test,
            confusion=confusion,
        )

    def train(
        self,
        labels: np.ndarray,
        keys: ReplicaKeys,
        epochs: int,
        on_epoch=None,
        start: tuple[TrainState, list[EpochMetrics]] | None = None,
    ) -> tuple[TrainState, list[EpochMetrics]]:
        """Train replicas; `on_epoch(epoch, state, history)` after each epoch.

        `start` continues from a state saved after `len(history)` epochs. Data
        order and dropout depend only on the keys, the epoch and the step count
        in the state, so a continued run computes exactly what an unbroken one does.
        """
        r = len(labels)
        labels = self.place(jnp.asarray(labels, jnp.int32), r)
        keys = keys if self.sharding is None else self.place(keys, r)
        state, history = start if start is not None else (self.init(keys), [])
        history = list(history)
        for epoch in range(len(history), epochs):
            state, metrics = self.run_epoch(state, labels, keys, epoch)
            history.append(metrics)
            if on_epoch is not None:
                on_epoch(epoch, state, history)
        return state, history


def time_single_step(recipe: Recipe, train_images: jax.Array, repeats: int = 3) -> float:
    """Seconds one replica's train step takes here (median, after a warm-up)."""
    import time

    step = jax.jit(make_train_step(recipe))
    keys = replica_keys(np.zeros(1), np.zeros(1))
    state = init_state(recipe, keys.init)
    labels = jnp.zeros((1, recipe.n_train), jnp.int32)
    idx = jnp.arange(recipe.batch_size)[None] % recipe.n_train
    mask = jnp.ones((recipe.batch_size,), jnp.float32)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        state, out = step(state, train_images, labels, keys.dropout, idx, mask)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))
