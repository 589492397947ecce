"""Replica-batched 3x3 'same' convolution, in the formulations `select` picks.

Every formulation computes, for each replica r, the ordinary convolution of
``x[r]`` with ``w[r]`` plus ``b[r]``; they differ only in what XLA is asked to
do, which decides the speed on each backend (``kernels.select`` has the
measurements and picks one for ``impl="auto"``):

- ``vmap``: ``jax.vmap`` of ``lax.conv_general_dilated``, which XLA sees as one
  grouped convolution (``feature_group_count=R``). cuDNN runs that well;
  XLA:CPU takes 7-11x as long as R separate models.
- ``im2col``: the nine shifted copies of the zero-padded input, side by side,
  form ``(R, B*H*W, 9*C)`` patches that meet ``w`` as ``(R, 9*C, O)`` in one
  batched GEMM (two more in the backward pass). Cost per replica is flat in R.
- ``native``: XLA's own convolution per replica, written out R times, with
  its backward pass in the canonical form XLA:CPU runs fast inside a loop
  (``kernels.conv_native`` says why autodiff's is not).

An input with replica axis 1, ``x`` (1, B, H, W, C), is one input every
replica reads (evaluation's test batch): ``im2col`` then builds its patches
once and meets the R kernels side by side, ``native`` runs one convolution
with R x O output channels, ``vmap`` broadcasts it.

Formulations no backend picks (``map``, ``unroll``) are baselines in
``bench/kernel_baselines.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from kernels import conv_native
from kernels.select import check_impl, choose

IMPLS: tuple[str, ...] = ("vmap", "im2col", "native")

# NHWC activations, HWIO kernels: the layout Flax uses and XLA:CPU prefers.
_DIMS = ("NHWC", "HWIO", "NHWC")


def conv_single(x: jax.Array, w: jax.Array, out_dtype) -> jax.Array:
    """Plain 3x3 'same' convolution of one replica, (B,H,W,C) * (3,3,C,O)."""
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=(1, 1),
        padding=((1, 1), (1, 1)),
        dimension_numbers=_DIMS,
        preferred_element_type=out_dtype,
    )


def _patches(x: jax.Array) -> jax.Array:
    """3x3 neighbourhoods of each pixel, zero padded: (R,B,H,W,C) -> (R,B,H,W,9C).

    The last axis is ordered (kh, kw, c), matching ``w.reshape(R, 9 * C, O)`` for
    an HWIO kernel.
    """
    h, w = x.shape[2], x.shape[3]
    xp = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1), (0, 0)))
    shifted = [xp[:, :, i : i + h, j : j + w, :] for i in range(3) for j in range(3)]
    return jnp.concatenate(shifted, axis=-1)


def _conv_im2col(x: jax.Array, w: jax.Array, out_dtype) -> jax.Array:
    r, bsz, h, wd, c = x.shape
    o = w.shape[-1]
    cols = _patches(x).reshape(r, bsz * h * wd, 9 * c)  # (R, B*H*W, 9C)
    y = lax.dot_general(
        cols,
        w.reshape(r, 9 * c, o),
        dimension_numbers=(((2,), (1,)), ((0,), (0,))),
        preferred_element_type=out_dtype,
    )  # (R, B*H*W, O)
    return y.reshape(r, bsz, h, wd, o)


def conv3x3(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array,
    *,
    impl: str = "auto",
    compute_dtype=jnp.float32,
    out_dtype=None,
) -> jax.Array:
    """Replica-batched 3x3 'same' convolution plus bias.

    Args:
      x: (R, B, H, W, C) inputs, or (1, B, H, W, C): one input all R read.
      w: (R, 3, 3, C, O) kernels, HWIO per replica.
      b: (R, O) biases.
      impl: one of ``IMPLS``, or "auto": ``choose("conv", replicas=R,
        channels=C)``, resolved at trace time.
      compute_dtype: dtype the products are taken in (e.g. ``jnp.bfloat16``);
        ``x`` and ``w`` are cast to it, sums accumulate in float32.
      out_dtype: the result's dtype; None: float32 (or ``x``'s if wider).

    Returns:
      (R, B, H, W, O) in `out_dtype`.
    """
    _check_shapes(x, w, b)
    r = w.shape[0]
    if impl == "auto":
        impl = choose("conv", replicas=r, channels=x.shape[-1])
    check_impl("conv", impl, IMPLS)
    if out_dtype is None:
        out_dtype = jnp.promote_types(x.dtype, jnp.float32)
    xc, wc = x.astype(compute_dtype), w.astype(compute_dtype)
    shared = x.shape[0] == 1 and r > 1
    if impl == "native":
        # The bias is added in float32 before rounding to out_dtype.
        y = conv_native.conv3x3_native(xc, wc, jnp.float32)
    elif impl == "im2col" and shared:
        y = conv_native.conv3x3_shared_im2col(xc, wc, jnp.float32, _patches)
    elif impl == "im2col":
        y = _conv_im2col(xc, wc, jnp.float32)
    else:  # vmap
        xc = jnp.broadcast_to(xc, (r, *xc.shape[1:]))
        y = jax.vmap(lambda xi, wi: conv_single(xi, wi, jnp.float32))(xc, wc)
    return (y + b[:, None, None, None, :].astype(jnp.float32)).astype(out_dtype)


def conv3x3_reference(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """Ground truth: a Python loop over replicas of the plain convolution.

    Args:
      x: (R, B, H, W, C); w: (R, 3, 3, C, O); b: (R, O).

    Returns:
      (R, B, H, W, O).
    """
    _check_shapes(x, w, b)
    outs = []
    for i in range(x.shape[0]):
        y = lax.conv_general_dilated(
            x[i],
            w[i],
            window_strides=(1, 1),
            padding="SAME",
            dimension_numbers=_DIMS,
            precision=lax.Precision.HIGHEST,
        )
        outs.append(y + b[i][None, None, None, :])
    return jnp.stack(outs)


def _check_shapes(x: jax.Array, w: jax.Array, b: jax.Array) -> None:
    if x.ndim != 5 or w.ndim != 5 or b.ndim != 2:
        raise ValueError(
            f"conv3x3 wants x (R,B,H,W,C), w (R,3,3,C,O), b (R,O); got "
            f"{x.shape}, {w.shape}, {b.shape}"
        )
    r, c, o = w.shape[0], x.shape[-1], w.shape[-1]
    if x.shape[0] not in (1, r) or w.shape != (r, 3, 3, c, o) or b.shape != (r, o):
        raise ValueError(
            f"conv3x3 shapes disagree: x {x.shape}, w {w.shape}, b {b.shape}"
        )
