"""Formulations `kernels.select` never chooses, kept as baselines for the bench.

Each computes what its `kernels/` counterpart computes and is tested against
the same plain reference (tests/test_kernel_baselines.py); they live here, out
of the hot-path modules, because no backend's measurements pick them
(see the table in `kernels/select.py`):

- conv ``map``: ``lax.map`` over replicas of the plain convolution. Sequential
  by design; on XLA:CPU a convolution inside a loop body is ~40x slower.
- conv ``unroll``: the plain convolution written out once per replica at trace
  time, then stacked. Each replica gets XLA's own convolution; the program (and
  its compile time) grows with R, and inside the engine's epoch loop XLA:CPU's
  convolution is slow, so ``im2col`` wins there.
- pool ``window``: ``lax.reduce_window``, whose backward pass is XLA's
  select-and-scatter (~30% of a CPU step more than ``reshape``).
- dense ``vmap``: ``jax.vmap`` of the single-model ``x @ w``; XLA is handed the
  same batched ``dot_general`` as ``einsum``, kept as a cross-check of that.

`conv3x3`, `maxpool2` and `dense` here accept these names and every name of
`kernels/`, so the bench can vary one layer's formulation at a time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from kernels import conv as kconv
from kernels import dense as kdense
from kernels import pool as kpool

CONV_IMPLS = ("map", "unroll")
POOL_IMPLS = ("window",)
DENSE_IMPLS = ("vmap",)
def conv3x3(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array,
    *,
    impl: str = "auto",
    compute_dtype=jnp.float32,
) -> jax.Array:
    """`kernels.conv.conv3x3`, plus the ``map`` and ``unroll`` baselines."""
    if impl not in CONV_IMPLS:
        return kconv.conv3x3(x, w, b, impl=impl, compute_dtype=compute_dtype)
    out_dtype = jnp.promote_types(x.dtype, jnp.float32)
    xc, wc = x.astype(compute_dtype), w.astype(compute_dtype)
    if impl == "map":
        y = lax.map(lambda xw: kconv.conv_single(xw[0], xw[1], out_dtype), (xc, wc))
    else:  # unroll
        y = jnp.stack([kconv.conv_single(xi, wi, out_dtype) for xi, wi in zip(xc, wc)])
    return y + b[:, None, None, None, :].astype(out_dtype)


def maxpool2(x: jax.Array, *, impl: str = "auto") -> jax.Array:
    """`kernels.pool.maxpool2`, plus the ``window`` baseline."""
    if impl not in POOL_IMPLS:
        return kpool.maxpool2(x, impl=impl)
    ones = (1,) * (x.ndim - 3)
    return lax.reduce_window(
        x, -jnp.inf, lax.max, ones + (2, 2, 1), ones + (2, 2, 1), "VALID"
    )


def dense(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array,
    *,
    impl: str = "auto",
    compute_dtype=jnp.float32,
) -> jax.Array:
    """`kernels.dense.dense`, plus the ``vmap`` baseline."""
    if impl not in DENSE_IMPLS:
        return kdense.dense(x, w, b, impl=impl, compute_dtype=compute_dtype)
    out_dtype = jnp.promote_types(x.dtype, jnp.float32)
    xc, wc = x.astype(compute_dtype), w.astype(compute_dtype)
    y = jax.vmap(lambda xi, wi: lax.dot(xi, wi, preferred_element_type=out_dtype))(
        xc, wc
    )
    return y + b[:, None, :].astype(out_dtype)
