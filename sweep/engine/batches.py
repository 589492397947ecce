"""Each replica's batches for one epoch, drawn on the device from its own keys.

Like a shuffling DataLoader with drop_last=False: a permutation of the training
set per replica and epoch, cut into batches, the last one padded and masked.
With per-replica subsets: `subset_batches` (a permutation of the shared width),
or `isolated_batches`, where a replica's batches depend on its own subset only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from sweep.engine.spec import Recipe, Subsets


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


def subset_batches(batch_size: int, shuffle_keys: jax.Array, epoch: jax.Array,
                   subsets: Subsets):
    """Each replica's batches over its own subset, for one epoch.

    The shuffle is `permutation(fold_in(key, epoch), M)` over the subset's
    positions, so a replica whose subset is full-length (length == M) sees
    exactly the order the plain path gives a dataset that holds only its M
    images. A shorter subset keeps the permutation's order of its valid
    positions, moved to the front; its tail batches are padding.

    Returns:
      indices (S, R, B) int32 into the training set and mask (S, R, B) float32,
      0 on padding; S = ceil(M / B).
    """
    r, m = subsets.index.shape
    b = batch_size
    s = math.ceil(m / b)

    def one(key, index, length):
        perm = jax.random.permutation(jax.random.fold_in(key, epoch), m)  # (M,)
        # Stable: the valid positions keep the permutation's order.
        perm = perm[jnp.argsort(perm >= length, stable=True)]
        return index[perm], (perm < length).astype(jnp.float32)

    idx, mask = jax.vmap(one)(shuffle_keys, subsets.index, subsets.length)  # (R, M)
    pad = s * b - m
    idx = jnp.pad(idx, ((0, 0), (0, pad))).reshape(r, s, b).transpose(1, 0, 2)
    mask = jnp.pad(mask, ((0, 0), (0, pad))).reshape(r, s, b).transpose(1, 0, 2)
    return idx, mask


def isolated_batches(batch_size: int, shuffle_keys: jax.Array, epoch: jax.Array,
                     subsets: Subsets):
    """Each replica's batches over its own subset, as a function of that subset
    alone: neither the order nor the batches depend on the width M, that is on
    the other replicas' subsets.

    Position j of row r (j < length[r]) gets a random 32-bit value keyed by
    (key_r, epoch, j); the valid positions are taken in the order of those
    values (ties by position), padding after them. The value of position j
    does not depend on M, and argsort is exact, so growing any other row (or
    padding this one further) leaves replica r's batches as they were; its
    tail batches, and all batches past ceil(length[r] / B), are padding,
    which `make_train_step(isolated=True)` turns into steps sat out.

    Returns:
      indices (S, R, B) int32 into the training set and mask (S, R, B) float32,
      0 on padding; S = ceil(M / B).
    """
    r, m = subsets.index.shape
    b = batch_size
    s = math.ceil(m / b)
    positions = jnp.arange(m, dtype=jnp.int32)  # (M,)

    def one(key, index, length):
        key = jax.random.fold_in(key, epoch)
        values = jax.vmap(lambda j: jax.random.bits(jax.random.fold_in(key, j)))(
            positions)  # (M,) uint32, position j's value independent of M
        # Sort keys, primary last: padding after valid, then value, then position.
        order = jnp.lexsort((positions, values, positions >= length))
        return index[order], (order < length).astype(jnp.float32)

    idx, mask = jax.vmap(one)(shuffle_keys, subsets.index, subsets.length)  # (R, M)
    pad = s * b - m
    idx = jnp.pad(idx, ((0, 0), (0, pad))).reshape(r, s, b).transpose(1, 0, 2)
    mask = jnp.pad(mask, ((0, 0), (0, pad))).reshape(r, s, b).transpose(1, 0, 2)
    return idx, mask
