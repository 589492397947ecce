"""One optimizer step for every replica on its own batch, and the optimizer.

Written for the replica-batched model: parameters and activations carry a
leading replica axis R, each replica's loss is its own batch mean, and no
parameter is shared, so summing the replicas' losses keeps their gradients apart.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from kernels import replica_map
from sweep.engine import optim
from sweep.engine.simple_cnn import SIMPLE_CNN
from sweep.engine.spec import ModelSpec, Recipe, TrainState
from sweep.engine.triggers import gather_stamped


def optimizer(
    recipe: Recipe, spec: ModelSpec = SIMPLE_CNN, *, own_counts: bool = False
) -> optax.GradientTransformation:
    """The recipe's optax transform (--optimizer), else the model's own
    (SimpleCNN: torch's Adam; a head: Keras' RMSprop), each replica on its own.

    `own_counts`: every replica keeps its own step count (and every other
    state leaf) on the axis R, for replicas that may sit a step out."""
    shared = not own_counts
    if recipe.optimizer is None and spec is not SIMPLE_CNN:
        return optim.per_replica(spec.optimizer(recipe.lr), shared_scalars=shared)
    return optim.per_replica(optim.build(recipe.optimizer, recipe.lr),
                             shared_scalars=shared)


def init_state(recipe: Recipe, init_keys: jax.Array,
               spec: ModelSpec = SIMPLE_CNN, *, own_counts: bool = False
               ) -> TrainState:
    params = jax.vmap(spec.init)(init_keys)
    opt_state = optimizer(recipe, spec, own_counts=own_counts).init(params)
    return TrainState(params, opt_state, jnp.zeros((), jnp.int32))


def margins(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Assigned-label logit minus the largest other logit (Pleiss et al., 2020).

    logits (..., K), y (...) int -> (...). Negative where the model prefers
    another class over the label it is trained on.
    """
    assigned = jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
    others = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf,
                       logits)
    return assigned - others.max(-1)


def keep_inactive(active: jax.Array, new, old):
    """`new` where a replica is active, else `old`, leaf by leaf: active (R,)
    bool, every leaf of new/old (R, ...). Exact: a select, not arithmetic."""

    def pick(n, o):
        return jnp.where(active.reshape(-1, *([1] * (jnp.ndim(n) - 1))), n, o)

    return jax.tree.map(pick, new, old)


def make_train_step(recipe: Recipe, spec: ModelSpec = SIMPLE_CNN, *,
                    per_example: bool = False, isolated: bool = False,
                    replicas: str = "auto"):
    """`(state, images, labels, dropout_keys, idx, mask[, stamps, trigger]) ->
    (state, (loss, correct))`.

    One optimizer step for every replica on its own batch: idx (R, B) indexes the
    training images, mask (B,) (or (R, B) with per-replica subsets) is 0 on
    padding. Loss and correct are per-replica sums over the batch (R,).
    `per_example` adds each example's training margin (R, B) to the outputs.

    `isolated`: replicas that do not step in lockstep. dropout_keys (R,) are
    this step's own keys (the caller folds them; the shared `state.step` is
    not used), the state must come from `init_state(own_counts=True)`, and a
    replica whose mask row is all 0 sits the step out: its parameters and
    optimizer state, step count included, are left exactly as they were.

    With `stamps` (`spec.Stamps`) and a `triggers.Trigger`, the batch is
    gathered and stamped per replica (a trigger backdoor); without them the
    step is exactly the label-flip sweep's.

    `replicas`: how the forward and backward passes run the replica axis
    (`replica_grads`); the optimizer updates all replicas at once either way.
    """
    apply = spec.make_apply(recipe)
    tx = optimizer(recipe, spec, own_counts=isolated)

    def loss_fn(params, x, y, mask, dropout_keys):
        logits = apply(params, x, dropout=recipe.dropout, dropout_key=dropout_keys)
        ce = spec.loss(logits, y)  # (R, B)
        m = mask[None] if mask.ndim == 1 else mask  # (1 or R, B)
        loss_sum = (ce * m).sum(-1)  # (R,)
        # Each replica's loss is its own batch mean; summing over replicas keeps
        # their gradients separate because no parameter is shared. An
        # all-padding batch (per-replica subsets) adds 0.
        per_replica = loss_sum / jnp.maximum(m.sum(-1), 1.0)
        # The batch's sums are taken here, inside whatever runs one replica at a
        # time (`replica_grads`), so their summation order never depends on R.
        correct = ((spec.predict(logits) == y) * m).sum(-1)
        extra = margins(logits, y) if per_example else None
        return per_replica.sum(), (loss_sum, correct, extra)

    grad_fn = replica_grads(jax.grad(loss_fn, has_aux=True), replicas)

    def train_step(state, images, labels, dropout_keys, idx, mask, stamps=None,
                   trigger=None):
        if stamps is None:
            batch = images[idx]  # (R, B, H, W, C) or (R, B, ...) features
        else:
            batch = gather_stamped(images, idx, stamps.mask, trigger, stamps.rows)
        x = spec.prepare(batch)
        y = jnp.take_along_axis(labels, idx, axis=1)  # (R, B)
        if isolated:
            keys = dropout_keys
        else:
            keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(dropout_keys,
                                                                   state.step)
        grads, (loss_sum, correct, extra) = grad_fn(state.params, x, y, mask, keys)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if isolated:
            active = mask.sum(-1) > 0  # (R,) replicas with a real example
            params = keep_inactive(active, params, state.params)
            opt_state = keep_inactive(active, opt_state, state.opt_state)
        new = TrainState(params, opt_state, state.step + 1)
        if per_example:
            return new, (loss_sum, correct, extra)
        return new, (loss_sum, correct)

    return train_step


def replica_grads(grad_fn, replicas: str = "auto"):
    """`grad_fn(params, x, y, mask, keys)` over all replicas at once, or one after
    another (``kernels.replica_map``; "auto": ``kernels.select``'s choice).

    One at a time, each replica's forward and backward pass sees arrays with a
    replica axis of 1 and the same batch mask (or its own row of an (R, B)
    mask); its loss is its own batch mean either way, so its gradients are the
    ones the batched pass computes, up to the order XLA sums them in.
    """
    run = replica_map.over_replicas(grad_fn, impl=replicas)

    def grads(params, x, y, mask, keys):
        shared = (3,) if mask.ndim == 1 else ()
        return run(params, x, y, mask, keys, shared=shared)

    return grads
