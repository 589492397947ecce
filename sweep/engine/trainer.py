"""The engine: R replicas trained together, one compiled call per epoch.

It knows nothing of poisoning. A replica is "these training labels, these keys";
the images live on the device once, as uint8, and every batch is gathered there
from the replica's own shuffle of the training set. An engine built with a
trigger also takes each replica's `Stamps` (which training images it sees
stamped) and evaluates every replica twice: on the test set, and on the test
set with the trigger on every image.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from kernels import invariance, replica_map
from sweep.engine import triggers
from sweep.engine.batches import epoch_batches, isolated_batches, subset_batches
from sweep.engine.evaluation import (
    make_evaluate,
    make_log_probs,
    make_predict,
    pad_eval_set,
)
from sweep.engine.sharding import ReplicaSharding
from sweep.engine.simple_cnn import SIMPLE_CNN
from sweep.engine.spec import (
    EpochMetrics,
    ModelSpec,
    Recipe,
    ReplicaKeys,
    Stamps,
    Subsets,
    TrainState,
    replica_keys,
)
from sweep.engine.step import init_state, make_train_step
from sweep.engine.triggers import Trigger

# Step-level progress reports per epoch; only where epochs are long (CPU).
TICKS_PER_EPOCH = 20


def make_train_epoch(recipe: Recipe, tick=None, spec: ModelSpec = SIMPLE_CNN, *,
                     replicas: str = "auto"):
    """A jitted `(state, images, labels, keys, epoch[, stamps, trigger]) ->
    (state, loss, correct)`.

    images: uint8 (N, H, W, C), shared; labels: int32 (R, N); keys: ReplicaKeys;
    epoch: () int32. Returns per-replica summed loss and correct counts (R,).
    stamps (`Stamps`) and trigger (`triggers.Trigger`): a trigger backdoor's
    batches, stamped as they are gathered; left out (None), the compiled epoch
    is the label-flip sweep's, unchanged.
    `tick(steps_done)`, if given, is called from inside the compiled epoch about
    TICKS_PER_EPOCH times, so a progress bar moves during a minutes-long epoch;
    it only observes, so results are the same with or without it. `replicas`:
    all at once or one after another (`sweep.engine.step.replica_grads`).
    """
    train_step = make_train_step(recipe, spec, replicas=replicas)
    s = recipe.steps_per_epoch
    every = max(1, s // TICKS_PER_EPOCH)

    def train_epoch(state, images, labels, keys, epoch, stamps=None, trigger=None):
        indices, mask = epoch_batches(recipe, keys.shuffle, epoch)

        def body(carry, batch):
            state, sums = carry
            idx, m, i = batch
            state, out = train_step(state, images, labels, keys.dropout, idx, m,
                                    stamps, trigger)
            if tick is not None:
                jax.lax.cond(
                    (i + 1) % every == 0,
                    lambda i: jax.debug.callback(tick, i + 1),
                    lambda i: None,
                    i,
                )
            return (state, add_sums(sums, out)), None

        xs = (indices, mask, jnp.arange(s, dtype=jnp.int32))
        (state, (loss_sum, correct)), _ = jax.lax.scan(
            body, (state, zero_sums(labels.shape[0])), xs)
        return state, loss_sum, correct

    donate = () if jax.default_backend() == "cpu" else (0,)
    return invariance.jit(train_epoch, donate_argnums=donate,
                          one_at_a_time=one_at_a_time(replicas))


def one_at_a_time(replicas: str) -> bool:
    """Whether `replicas` ("auto" resolved by `kernels.select`) trains the
    replicas one after another inside the compiled step."""
    return replica_map.resolve(replicas) == "sequential"


def zero_sums(r: int) -> tuple[jax.Array, jax.Array]:
    """An epoch's running (loss sum, correct count) per replica, at zero."""
    return jnp.zeros((r,), jnp.float32), jnp.zeros((r,), jnp.float32)


def add_sums(sums, step_out) -> tuple[jax.Array, jax.Array]:
    """`sums` plus one step's (loss sum (R,), correct (R,)): carried through the
    epoch's scan step by step, an elementwise add, rather than a reduction over
    the stacked steps that XLA could split differently for another R."""
    return sums[0] + step_out[0], sums[1] + step_out[1]


def make_subset_epoch(recipe: Recipe, *, record_margins: bool = False, tick=None,
                      replicas: str = "auto"):
    """A jitted `(state, images, labels, keys, subsets, epoch[, stamps, trigger])
    -> (state, loss, correct, margin_sum)`: one epoch where each replica trains
    on its own subset (stamps and trigger as in `make_train_epoch`).

    labels: int32 (R, N) over the whole training set; subsets: `Subsets`.
    Returns per-replica summed loss and correct counts (R,), and with
    `record_margins` the training margin of every image this epoch (R, N)
    float32 (0 where a replica did not train on the image), accumulated inside
    the compiled epoch; else margin_sum is None. Without subsets use
    `make_train_epoch`, which this leaves untouched.
    """
    train_step = make_train_step(recipe, per_example=record_margins,
                                 replicas=replicas)

    def train_epoch(state, images, labels, keys, subsets, epoch, stamps=None,
                    trigger=None):
        indices, mask = subset_batches(recipe.batch_size, keys.shuffle, epoch, subsets)
        s = indices.shape[0]
        every = max(1, s // TICKS_PER_EPOCH)
        r, n = labels.shape
        rows = jnp.arange(r)[:, None]  # (R, 1)

        def body(carry, batch):
            state, sums, margin_sum = carry
            idx, m, i = batch
            state, out = train_step(state, images, labels, keys.dropout, idx, m,
                                    stamps, trigger)
            if record_margins:
                margin_sum = margin_sum.at[rows, idx].add(out[2] * m)
            if tick is not None:
                jax.lax.cond(
                    (i + 1) % every == 0,
                    lambda i: jax.debug.callback(tick, i + 1),
                    lambda i: None,
                    i,
                )
            return (state, add_sums(sums, out), margin_sum), None

        margin0 = jnp.zeros((r, n) if record_margins else (r, 0), jnp.float32)
        xs = (indices, mask, jnp.arange(s, dtype=jnp.int32))
        (state, (loss_sum, correct), margin_sum), _ = jax.lax.scan(
            body, (state, zero_sums(r), margin0), xs)
        return state, loss_sum, correct, (margin_sum if record_margins else None)

    donate = () if jax.default_backend() == "cpu" else (0,)
    return invariance.jit(train_epoch, donate_argnums=donate,
                          one_at_a_time=one_at_a_time(replicas))


def make_isolated_epoch(recipe: Recipe, *, tick=None, replicas: str = "auto"):
    """A jitted `(state, images, labels, keys, subsets, epoch) -> (state, loss,
    correct, None)`: one epoch where each replica trains on its own subset, as a
    function of that subset alone.

    Every replica sees `isolated_batches` (its order keyed by its own key, the
    epoch and the position in its row, never by the width M) and takes
    ceil(length / B) real steps; the compiled epoch runs ceil(M / B) steps, and
    in those past its own a replica sits out (`make_train_step(isolated=True)`:
    parameters and optimizer state unchanged). Dropout keys are folded with the
    epoch and the step within it, the same for every M. Compiled under
    `kernels.invariance`, so neither the chunk's size nor the other replicas
    change a replica's bits: a replica trained alone, or beside any others,
    ends the same. The state must come from `init_state(own_counts=True)`.
    """
    train_step = make_train_step(recipe, isolated=True, replicas=replicas)

    def train_epoch(state, images, labels, keys, subsets, epoch):
        indices, mask = isolated_batches(recipe.batch_size, keys.shuffle, epoch,
                                         subsets)
        s = indices.shape[0]
        every = max(1, s // TICKS_PER_EPOCH)
        fold = jax.vmap(jax.random.fold_in, in_axes=(0, None))
        epoch_keys = fold(keys.dropout, epoch)  # (R,)

        def body(carry, batch):
            state, sums = carry
            idx, m, i = batch
            state, out = train_step(state, images, labels, fold(epoch_keys, i), idx,
                                    m)
            if tick is not None:
                jax.lax.cond(
                    (i + 1) % every == 0,
                    lambda i: jax.debug.callback(tick, i + 1),
                    lambda i: None,
                    i,
                )
            return (state, add_sums(sums, out)), None

        xs = (indices, mask, jnp.arange(s, dtype=jnp.int32))
        (state, (loss_sum, correct)), _ = jax.lax.scan(
            body, (state, zero_sums(labels.shape[0])), xs)
        return state, loss_sum, correct, None

    donate = () if jax.default_backend() == "cpu" else (0,)
    return invariance.jit(train_epoch, donate_argnums=donate,
                          one_at_a_time=one_at_a_time(replicas))


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
        spec: ModelSpec = SIMPLE_CNN,
        devices=None,
        trigger: Trigger | None = None,
    ):
        """`on_step(steps_done_in_epoch)`, if given, observes training progress.

        The tick is compiled in on CPU only, where one epoch can take minutes
        (always, so the compiled epoch is the same with or without an observer).
        `spec` is what a replica is: SimpleCNN on uint8 images by default, or
        e.g. `sweep.engine.transfer_head.spec(d)`, a head on float features held as "images".
        `devices`: shard the replica axis over these (see `sweep.engine.sharding`); None
        or one device is the plain single-device engine.
        `trigger`: a trigger backdoor's (uint8 images only). `train` then takes
        every replica's `Stamps`, and each epoch also evaluates the test set
        stamped on every image (`EpochMetrics.stamped_confusion`). The train
        images may then hold extra rows past the N training images, which
        `Stamps.rows` can point at.
        """
        self.recipe = recipe
        self.spec = spec
        self.sharding = None
        if devices is not None and len(devices) > 1:
            self.sharding = ReplicaSharding(devices)
        put = jax.device_put if self.sharding is None else self.sharding.put_shared

        def tick(steps_done) -> None:
            if on_step is not None:
                on_step(int(steps_done))

        self.train_epoch = make_train_epoch(
            recipe, tick if jax.default_backend() == "cpu" else None, spec
        )
        self.init_state = invariance.jit(lambda keys: init_state(recipe, keys, spec))
        self.evaluate = make_evaluate(recipe, spec)
        self.train_images = put(train_images)  # uint8 (or features), once per device
        test_x, test_y = pad_eval_set(test_images, test_labels, recipe.eval_batch_size)
        self.test_images = put(test_x)
        self.test_labels = put(test_y)
        self.n_test = len(test_labels)
        self.trigger, self.stamped_test_images = None, None
        if trigger is not None:
            trigger = Trigger(np.asarray(trigger.pattern, np.uint8),
                              np.asarray(trigger.alpha, np.float32))
            # The stamped evaluation's own copy of the test set: the clean one
            # is never stamped.
            stamped = triggers.stamp(test_x, np.ones(len(test_x), bool), trigger)
            self.trigger = put(trigger)
            self.stamped_test_images = put(np.asarray(stamped))

    def init(self, keys: ReplicaKeys) -> TrainState:
        return self.place(self.init_state(keys.init), len(keys.init))

    def place(self, tree, r: int):
        """Per-replica arrays onto the device(s): sharded over the replica axis
        when the engine spans several devices, else as `jax.device_put`."""
        if self.sharding is None:
            return jax.device_put(tree)
        return self.sharding.put_replicas(tree, r)

    def evaluate_all(self, params):
        """(test loss sum (R,), confusion (R, K, K), stamped confusion (R, K, K)
        or None without a trigger), on the device."""
        loss_sum, confusion = self.evaluate(params, self.test_images, self.test_labels)
        stamped = None
        if self.trigger is not None:
            _, stamped = self.evaluate(params, self.stamped_test_images,
                                       self.test_labels)
        return loss_sum, confusion, stamped

    def place_stamps(self, stamps: Stamps | None, r: int) -> Stamps | None:
        """A replica chunk's `Stamps` onto the device(s), checked against the
        engine: stamps go with a trigger, and a trigger needs them."""
        if (stamps is None) != (self.trigger is None):
            raise ValueError("an engine built with a trigger trains with stamps "
                             "(an all-False mask for a clean replica), and only then")
        if stamps is None:
            return None
        mask = np.asarray(stamps.mask, bool)
        if mask.shape != (r, self.recipe.n_train):
            raise ValueError(
                f"stamps.mask is {mask.shape}, not {(r, self.recipe.n_train)}")
        rows = stamps.rows
        if rows is not None:
            rows = np.asarray(rows, np.int32)
            if rows.shape != mask.shape or rows.min() < 0 or (
                    rows.max() >= self.train_images.shape[0]):
                raise ValueError("stamps.rows must be (R, N) rows of the stored images")
        return self.place(Stamps(mask, rows), r)

    def run_epoch(
        self, state: TrainState, labels: jax.Array, keys: ReplicaKeys, epoch: int,
        stamps: Stamps | None = None,
    ) -> tuple[TrainState, EpochMetrics]:
        """Train one epoch (0-based `epoch`) and evaluate; metrics come to host.

        `stamps`: already on the device (`place_stamps`), with a trigger."""
        extra = () if stamps is None else (stamps, self.trigger)
        state, loss_sum, correct = self.train_epoch(
            state, self.train_images, labels, keys, jnp.int32(epoch), *extra
        )
        test_loss_sum, confusion, stamped = self.evaluate_all(state.params)
        # One host transfer per epoch, of a few numbers per replica.
        loss_sum, correct, test_loss_sum, confusion, stamped = jax.device_get(
            (loss_sum, correct, test_loss_sum, confusion, stamped)
        )
        n = self.recipe.n_train
        return state, EpochMetrics(
            train_loss=loss_sum / n,
            train_accuracy=100.0 * correct / n,
            test_loss=test_loss_sum / self.n_test,
            confusion=confusion,
            stamped_confusion=stamped,
        )

    def train(
        self,
        labels: np.ndarray,
        keys: ReplicaKeys,
        epochs: int,
        on_epoch=None,
        start: tuple[TrainState, list[EpochMetrics]] | None = None,
        stamps: Stamps | None = None,
    ) -> tuple[TrainState, list[EpochMetrics]]:
        """Train replicas; `on_epoch(epoch, state, history)` after each epoch.

        `start` continues from a state saved after `len(history)` epochs. Data
        order and dropout depend only on the keys, the epoch and the step count
        in the state, so a continued run computes exactly what an unbroken one does.
        `stamps`: every replica's `Stamps` (host arrays), for an engine built
        with a trigger.
        """
        r = len(labels)
        stamps = self.place_stamps(stamps, r)
        labels = self.place(jnp.asarray(labels, jnp.int32), r)
        keys = keys if self.sharding is None else self.place(keys, r)
        state, history = start if start is not None else (self.init(keys), [])
        history = list(history)
        for epoch in range(len(history), epochs):
            state, metrics = self.run_epoch(state, labels, keys, epoch, stamps)
            history.append(metrics)
            if on_epoch is not None:
                on_epoch(epoch, state, history)
        return state, history


class SubsetEngine(Engine):
    """An Engine whose replicas each train on their own subset of the images.

    Everything else (keys, labels, evaluation) is the Engine's; `train` takes a
    `Subsets` and can record every image's training margin per epoch.

    `isolated=True` makes every replica a function of its own subset, labels
    and keys alone (`make_isolated_epoch`): the same bits whatever the other
    replicas of the chunk train on, however wide their subsets, and whatever
    the chunk's size. Its numbers differ from the default mode's, which the
    out-of-fold models of `detect` keep.
    """

    def __init__(self, recipe: Recipe, train_images, test_images, test_labels, *,
                 record_margins: bool = False, isolated: bool = False,
                 on_step: Callable[[int], None] | None = None,
                 trigger: Trigger | None = None):
        if isolated and record_margins:
            raise ValueError("isolated replicas do not record training margins")
        if isolated and trigger is not None:
            raise ValueError("isolated replicas take no trigger")
        super().__init__(recipe, train_images, test_images, test_labels,
                         on_step=on_step, trigger=trigger)

        def tick(steps_done) -> None:
            if on_step is not None:
                on_step(int(steps_done))

        tick = tick if jax.default_backend() == "cpu" else None
        self.record_margins = record_margins
        self.isolated = isolated
        if isolated:
            self.init_state = invariance.jit(
                lambda keys: init_state(recipe, keys, own_counts=True))
            self.subset_epoch = make_isolated_epoch(recipe, tick=tick)
        else:
            self.subset_epoch = make_subset_epoch(
                recipe, record_margins=record_margins, tick=tick)
        self._predict = None
        self._log_probs = None

    def train(self, labels, keys: ReplicaKeys, epochs: int, *, subsets: Subsets,
              on_epoch=None, evaluate: bool | str = True,
              stamps: Stamps | None = None):
        """Train replicas on their subsets.

        `evaluate`: True after every epoch, "last" after the last one only,
        False never (out-of-fold models are judged on their held-out folds);
        an epoch not evaluated has an all-zero confusion and NaN test loss.
        `stamps`: as in `Engine.train`, for an engine built with a trigger.

        Returns:
          (state, history, margin_sum): margin_sum (R, N) float32 on the host,
          the training margins summed over epochs (None unless recording).
        """
        if self.isolated and len(labels) == 1:
            # XLA drops a replica axis of size 1 and picks other kernels, whose
            # sums round otherwise: a lone replica trains beside its own twin.
            # (`on_epoch` sees the pair.)
            state, history, _ = self.train(
                np.concatenate([labels, labels]),
                ReplicaKeys(*(jnp.concatenate([k, k]) for k in keys)), epochs,
                subsets=Subsets(*(np.concatenate([x, x]) for x in map(np.asarray,
                                                                      subsets))),
                on_epoch=on_epoch, evaluate=evaluate)
            first = jax.tree.map(lambda x: x[:1], (state.params, state.opt_state))
            return (TrainState(*first, state.step),
                    [EpochMetrics(*(None if x is None else x[:1] for x in m))
                     for m in history], None)
        stamps = self.place_stamps(stamps, len(labels))
        extra = () if stamps is None else (stamps, self.trigger)
        labels = jax.device_put(jnp.asarray(labels, jnp.int32))
        subsets = Subsets(jnp.asarray(subsets.index, jnp.int32),
                          jnp.asarray(subsets.length, jnp.int32))
        lengths = np.asarray(subsets.length)
        state, history, total = self.init(keys), [], None
        for epoch in range(epochs):
            state, loss_sum, correct, margin = self.subset_epoch(
                state, self.train_images, labels, keys, subsets, jnp.int32(epoch),
                *extra)
            if evaluate is True or (evaluate == "last" and epoch == epochs - 1):
                test_loss_sum, confusion, stamped = self.evaluate_all(state.params)
            else:
                k = self.recipe.n_classes
                test_loss_sum = jnp.full(loss_sum.shape, jnp.nan)
                confusion = jnp.zeros((loss_sum.shape[0], k, k), jnp.int32)
                stamped = None if self.trigger is None else confusion
            loss_sum, correct, test_loss_sum, confusion, margin, stamped = (
                jax.device_get((loss_sum, correct, test_loss_sum, confusion, margin,
                                stamped)))
            with np.errstate(invalid="ignore"):  # an empty subset: 0 / 0 = NaN
                train_loss, train_acc = loss_sum / lengths, 100.0 * correct / lengths
            history.append(EpochMetrics(
                train_loss=train_loss,
                train_accuracy=train_acc,
                test_loss=test_loss_sum / self.n_test,
                confusion=confusion,
                stamped_confusion=stamped,
            ))
            if margin is not None:
                total = margin if total is None else total + margin
            if on_epoch is not None:
                on_epoch(epoch, state, history)
        return state, history, total

    def log_probs(self, params, images: np.ndarray) -> np.ndarray:
        """Log-probabilities (R, N, K) on the host, compiled under
        `kernels.invariance`: a replica's outputs do not depend on its chunk."""
        if self._log_probs is None:
            self._log_probs = make_log_probs(self.recipe)
        r, n = jax.tree.leaves(params)[0].shape[0], len(images)
        if r == 1:  # as in `train`: a lone replica beside its twin
            params = jax.tree.map(lambda x: jnp.concatenate([x, x]), params)
        padded, _ = pad_eval_set(images, np.zeros(n, np.int32),
                                 self.recipe.eval_batch_size)
        out = jax.device_get(self._log_probs(params, jax.device_put(padded)))
        return out[:r, :n]

    def predict(self, params, images: np.ndarray):
        """Log-probabilities (R, N, K) and penultimate features (R, N, 512), host."""
        if self._predict is None:
            self._predict = make_predict(self.recipe)
        n = len(images)
        padded, _ = pad_eval_set(images, np.zeros(n, np.int32),
                                 self.recipe.eval_batch_size)
        logp, feats = jax.device_get(self._predict(params, jax.device_put(padded)))
        return logp[:, :n], feats[:, :n]


def time_single_step(recipe: Recipe, train_images: jax.Array, repeats: int = 3) -> float:
    """Seconds one replica's train step takes here (median, after a warm-up)."""
    step = invariance.jit(make_train_step(recipe), one_at_a_time=one_at_a_time("auto"))
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
