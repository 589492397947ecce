"""Replica-batched dense layer.

- ``einsum``: one batched matmul ``'rbi,rio->rbo'`` (a ``dot_general`` with the
  replica axis as batch dimension), forward and backward.

The ``vmap`` formulation (``jax.vmap`` of ``x @ w``, the same batched
``dot_general`` to XLA) is a cross-check in ``bench/kernel_baselines.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from kernels.select import check_impl, choose

IMPLS: tuple[str, ...] = ("einsum",)


def dense(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array,
    *,
    impl: str = "auto",
    compute_dtype=jnp.float32,
    out_dtype=None,
) -> jax.Array:
    """Replica-batched ``x @ w + b``.

    Args:
      x: (R, B, I) inputs.
      w: (R, I, O) weights.
      b: (R, O) biases.
      impl: one of ``IMPLS``, or "auto" for ``choose("dense", replicas=R)``.
      compute_dtype: dtype the products are taken in; ``x`` and ``w`` are cast
        to it, sums accumulate in float32.
      out_dtype: the result's dtype; None: float32 (or ``x``'s if wider).

    Returns:
      (R, B, O) in `out_dtype`.
    """
    _check_shapes(x, w, b)
    impl = choose("dense", replicas=x.shape[0]) if impl == "auto" else impl
    check_impl("dense", impl, IMPLS)
    acc = jnp.promote_types(x.dtype, jnp.float32)
    xc, wc = x.astype(compute_dtype), w.astype(compute_dtype)
    y = jnp.einsum("rbi,rio->rbo", xc, wc, preferred_element_type=acc)
    y = y + b[:, None, :].astype(acc)
    return y if out_dtype is None else y.astype(out_dtype)


def dense_reference(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """Ground truth: a Python loop over replicas of ``x[r] @ w[r] + b[r]``.

    Args:
      x: (R, B, I); w: (R, I, O); b: (R, O).

    Returns:
      (R, B, O).
    """
    _check_shapes(x, w, b)
    hi = lax.Precision.HIGHEST
    return jnp.stack(
        [jnp.dot(x[i], w[i], precision=hi) + b[i][None, :] for i in range(x.shape[0])]
    )


def _check_shapes(x: jax.Array, w: jax.Array, b: jax.Array) -> None:
    r, i = x.shape[0], x.shape[-1]
    if (
        x.ndim != 3
        or w.ndim != 3
        or w.shape[:2] != (r, i)
        or b.shape != (r, w.shape[2])
    ):
        raise ValueError(
            f"dense wants x (R,B,I), w (R,I,O), b (R,O); got "
            f"{x.shape}, {w.shape}, {b.shape}"
        )
