"""Replica-batched 2x2 max pooling (stride 2).

- ``reshape``: split H and W into (H/2, 2) and (W/2, 2) and take ``jnp.max``
  over the two size-2 axes. The backward pass is a compare-and-select fused
  into one elementwise loop. Works on any leading axes: (R, B, H, W, C), ...

The ``window`` formulation (``lax.reduce_window``, select-and-scatter backward,
~30% of a CPU step slower) is a baseline in ``bench/kernel_baselines.py``.

Ties: ``jnp.max``'s gradient is split equally among tied maxima, where
select-and-scatter (and PyTorch) send it all to the first one. After a ReLU the
only realistic ties are at 0, where the ReLU's gradient is 0 anyway, so the
two agree on any gradient that reaches the weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels.select import check_impl, choose

IMPLS: tuple[str, ...] = ("reshape",)


def maxpool2(x: jax.Array, *, impl: str = "auto") -> jax.Array:
    """2x2 max pooling with stride 2 over the H and W axes.

    Args:
      x: (..., H, W, C) with H and W even, e.g. (R, B, H, W, C).
      impl: one of ``IMPLS``, or "auto" for ``choose("pool")``.

    Returns:
      (..., H/2, W/2, C).
    """
    _check_shape(x)
    replicas = x.shape[0] if x.ndim == 5 else None
    impl = choose("pool", replicas=replicas) if impl == "auto" else impl
    check_impl("pool", impl, IMPLS)
    *lead, h, w, c = x.shape
    return jnp.max(x.reshape(*lead, h // 2, 2, w // 2, 2, c), axis=(-4, -2))


def maxpool2_reference(x: jax.Array) -> jax.Array:
    """Ground truth: the maximum of the four strided 2x2 corners.

    Args:
      x: (..., H, W, C) with H and W even.

    Returns:
      (..., H/2, W/2, C).
    """
    _check_shape(x)
    corners = [x[..., i::2, j::2, :] for i in range(2) for j in range(2)]
    return jnp.max(jnp.stack(corners), axis=0)


def _check_shape(x: jax.Array) -> None:
    if x.ndim < 3 or x.shape[-3] % 2 or x.shape[-2] % 2:
        raise ValueError(f"maxpool2 wants (..., H, W, C) with even H, W; got {x.shape}")
