"""Each replica's batches for one epoch, drawn on the device from its own keys.

Like a shuffling DataLoader with drop_last=False: a permutation of the training
set per replica and epoch, cut into batches, the last one padded and masked.
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
