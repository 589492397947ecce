"""XLA's own convolution per replica, with a backward pass XLA:CPU can run fast.

``kernels.conv``'s ``native`` formulation and its shared-input forms (issue 21;
the measurements are in ``kernels.select`` and ``bench/RESULTS.md``).

Why the backward pass is written by hand: inside a ``while`` loop (the engine's
``lax.scan`` over an epoch) the weight gradient that autodiff writes for
``lax.conv_general_dilated`` keeps a non-canonical layout
(``dim_labels=f01b_i01o->01bf``) that no library kernel of XLA:CPU (jaxlib
0.10.2) takes, and XLA emits a naive loop: 8.1 s against 61 ms for the same
convolution outside a loop (conv2's shape, batch 128). Outside a loop XLA
transposes the operands into canonical form first. `conv_native` writes that
canonical form itself (a custom VJP):

- input gradient: the 'same' convolution of dY with the kernel flipped in
  space and its in/out channels swapped;
- weight gradient: one ordinary NHWC/HWIO convolution of the input seen as
  (C, H, W, B) with dY seen as an (H, W, B, O) kernel: batch and feature
  swapped on both sides, an H x W window, a 3 x 3 output.

Every convolution, forward and backward, is then one library call (Eigen or
YNNPACK), in or out of a loop.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_DIMS = ("NHWC", "HWIO", "NHWC")
_SAME = ((1, 1), (1, 1))


def _conv(x: jax.Array, w: jax.Array) -> jax.Array:
    """3x3 'same' convolution, float32 sums: (B,H,W,C) * (3,3,C,O) -> (B,H,W,O)."""
    return lax.conv_general_dilated(x, w, (1, 1), _SAME, dimension_numbers=_DIMS,
                                    preferred_element_type=jnp.float32)


def _input_grad(g: jax.Array, w: jax.Array) -> jax.Array:
    """dX: 'same' convolution of dY (B,H,W,O) with the kernel flipped, I<->O."""
    return _conv(g, jnp.flip(w, (0, 1)).swapaxes(2, 3))


def _kernel_grad(x: jax.Array, g: jax.Array) -> jax.Array:
    """dW[kh,kw,c,o] = sum_{b,h,w} x_pad[b,h+kh,w+kw,c] g[b,h,w,o], canonical.

    Args:
      x: (B, H, W, C) the layer's input; g: (B, H, W, O) its output gradient.

    Returns:
      (3, 3, C, O) float32.
    """
    x_t = x.transpose(3, 1, 2, 0)  # (C, H, W, B): batch as the channels
    g_t = g.transpose(1, 2, 0, 3)  # (H, W, B, O): an H x W kernel
    return _conv(x_t, g_t).transpose(1, 2, 0, 3)  # (C, 3, 3, O) -> (3, 3, C, O)


@functools.cache
def _native(out_dtype: str):
    """The custom-VJP convolution whose output has dtype `out_dtype`."""

    @jax.custom_vjp
    def conv(x, w):
        return _conv(x, w).astype(out_dtype)

    def fwd(x, w):
        return conv(x, w), (x, w)

    def bwd(res, g):
        x, w = res
        g = g.astype(x.dtype)  # products in the compute dtype, sums in float32
        return (_input_grad(g, w).astype(x.dtype),
                _kernel_grad(x, g).astype(w.dtype))

    conv.defvjp(fwd, bwd)
    return conv


def conv_native(x: jax.Array, w: jax.Array, out_dtype=jnp.float32) -> jax.Array:
    """One replica's 3x3 'same' convolution, its backward pass in canonical form.

    Args:
      x: (B, H, W, C); w: (3, 3, C, O), both in the compute dtype.
      out_dtype: the output's dtype; sums are float32 whatever it is.

    Returns:
      (B, H, W, O) in `out_dtype`.
    """
    return _native(jnp.dtype(out_dtype).name)(x, w)


def conv3x3_native(x: jax.Array, w: jax.Array, out_dtype) -> jax.Array:
    """`conv_native` for each replica, written out R times at trace time.

    Args:
      x: (R, B, H, W, C), or (1, B, H, W, C): one input every replica reads
        (then one convolution with the R kernels side by side, R*O outputs).
      w: (R, 3, 3, C, O).

    Returns:
      (R, B, H, W, O) in `out_dtype`, without bias.
    """
    r = w.shape[0]
    if x.shape[0] == 1 and r > 1:  # shared input: forward only (no dX needed)
        o = w.shape[-1]
        wide = w.transpose(1, 2, 3, 0, 4).reshape(*w.shape[1:4], r * o)
        y = conv_native(x[0], wide, out_dtype)  # (B, H, W, R*O)
        return jnp.moveaxis(y.reshape(*y.shape[:3], r, o), 3, 0)
    return jnp.stack([conv_native(x[i], w[i], out_dtype) for i in range(r)])


def conv3x3_shared_im2col(x: jax.Array, w: jax.Array, out_dtype,
                          patches) -> jax.Array:
    """One input for all replicas: its im2col patches once, the kernels side by side.

    ``(B*H*W, 9C) @ (9C, R*O)`` is one wider GEMM than R separate
    ``(B*H*W, 9C) @ (9C, O)``, and the patches are built once, not R times:
    evaluation's first layer, where every replica reads the same test batch.

    Args:
      x: (1, B, H, W, C); w: (R, 3, 3, C, O); `patches` is
        ``kernels.conv._patches``.

    Returns:
      (R, B, H, W, O) in `out_dtype`, without bias.
    """
    _, bsz, h, wd, c = x.shape
    r, o = w.shape[0], w.shape[-1]
    cols = patches(x)[0].reshape(bsz * h * wd, 9 * c)  # (B*H*W, 9C)
    wide = w.reshape(r, 9 * c, o).transpose(1, 0, 2).reshape(9 * c, r * o)
    y = jnp.dot(cols, wide, preferred_element_type=jnp.float32)  # (B*H*W, R*O)
    y = y.astype(out_dtype).reshape(bsz, h, wd, r, o)
    return jnp.moveaxis(y, 3, 0)
