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
- conv ``grouped``: the replicas folded into the channels of ONE convolution,
  ``(B, H, W, R*C)`` against ``(3, 3, C, R*O)`` with ``feature_group_count=R``,
  written by hand. This is exactly what XLA gets from ``jax.vmap`` of the
  plain convolution (``kernels.conv``'s ``vmap``), so it is a cross-check of
  that: the two should time alike on every backend.
- conv ``blockdiag``: the same fold with an ordinary (ungrouped) convolution:
  ``(3, 3, R*C, R*O)`` block-diagonal weights, zeros off the diagonal. R x the
  multiply-adds of ``grouped``, but a plain dense convolution, which cuDNN
  runs at full speed where grouped ones with 3-64 channels per group are slow;
  worth timing at small R only (the bench caps its R).
- conv ``shared``: valid ONLY when every replica sees the same input (the test
  set in evaluation; the first layer of paired twins, which see one batch):
  one convolution of the shared ``(B, H, W, C)`` batch with the R kernels side
  by side as ``R*O`` output channels, ``(B, H, W, R*O)`` -> ``(R, B, H, W, O)``.
  It reads ``x[0]`` and ignores the other replicas' inputs; gradients reach
  ``w`` and ``b`` correctly, ``x`` only through ``x[0]``, so use it where the
  input needs no gradient (the first layer). The issue calls this "replicas
  folded into the batch where the input is shared": the shared batch is read
  once, and the replica axis ends up in the output channels.
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

CONV_IMPLS = ("map", "unroll", "grouped", "blockdiag", "shared")
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
    """`kernels.conv.conv3x3`, plus the baselines in ``CONV_IMPLS``."""
    if impl not in CONV_IMPLS:
        return kconv.conv3x3(x, w, b, impl=impl, compute_dtype=compute_dtype)
    out_dtype = jnp.promote_types(x.dtype, jnp.float32)
    xc, wc = x.astype(compute_dtype), w.astype(compute_dtype)
    if impl == "map":
        y = lax.map(lambda xw: kconv.conv_single(xw[0], xw[1], out_dtype), (xc, wc))
    elif impl == "unroll":
        y = jnp.stack([kconv.conv_single(xi, wi, out_dtype) for xi, wi in zip(xc, wc)])
    elif impl == "shared":
        y = conv_shared(xc[0], wc, out_dtype)
    else:  # grouped, blockdiag
        y = _conv_folded(xc, wc, out_dtype, grouped=impl == "grouped")
    return y + b[:, None, None, None, :].astype(out_dtype)


def _conv_folded(x: jax.Array, w: jax.Array, out_dtype, *, grouped: bool) -> jax.Array:
    """Replicas folded into the channels of one convolution (see the module doc)."""
    r, bsz, h, wd, c = x.shape
    o = w.shape[-1]
    xf = x.transpose(1, 2, 3, 0, 4).reshape(bsz, h, wd, r * c)  # channel = r*C + c
    if grouped:
        wf = w.transpose(1, 2, 3, 0, 4).reshape(3, 3, c, r * o)  # out = r*O + o
    else:  # block diagonal: in r*C + c meets out s*O + o only where r == s
        eye = jnp.eye(r, dtype=w.dtype)
        wf = jnp.einsum("rhwco,rs->hwrcso", w, eye).reshape(3, 3, r * c, r * o)
    y = lax.conv_general_dilated(
        xf,
        wf,
        window_strides=(1, 1),
        padding=((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=r if grouped else 1,
        preferred_element_type=out_dtype,
    )  # (B, H, W, R*O)
    return y.reshape(bsz, h, wd, r, o).transpose(3, 0, 1, 2, 4)


def conv_shared(x: jax.Array, w: jax.Array, out_dtype=jnp.float32) -> jax.Array:
    """One input batch, R kernels: (B,H,W,C) * (R,3,3,C,O) -> (R,B,H,W,O), no bias.

    One convolution with the kernels side by side as R*O output channels.
    """
    r, _, _, c, o = w.shape
    bsz, h, wd = x.shape[:3]
    wf = w.transpose(1, 2, 3, 0, 4).reshape(3, 3, c, r * o)
    y = kconv.conv_single(x, wf, out_dtype)  # (B, H, W, R*O)
    return y.reshape(bsz, h, wd, r, o).transpose(3, 0, 1, 2, 4)


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
