"""The reference SimpleCNN as pure functions over a parameter pytree.

The model is written once against a small set of layer functions. With
`single_layers()` it runs one replica (arrays without a replica axis); with
`batched_layers()` every parameter and activation carries a leading replica axis
R and the layers are the replica-batched kernels. Both compute the same thing;
tests hold them to it.

Recipe: conv3x3(3->32)+ReLU+maxpool2, conv3x3(32->64)+ReLU+maxpool2,
conv3x3(64->128)+ReLU+maxpool2, flatten 2048, dense 512+ReLU, dropout, dense 10.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from kernels import conv as kconv
from kernels import dense as kdense
from kernels import pool as kpool
from sweep.engine.optim import reference_adam
from sweep.engine.spec import ModelSpec, Recipe

Params = dict[str, dict[str, jax.Array]]

# (name, fan_in, shape of w); convs are HWIO, dense layers (in, out).
LAYOUT = (
    ("conv1", 3 * 9, (3, 3, 3, 32)),
    ("conv2", 32 * 9, (3, 3, 32, 64)),
    ("conv3", 64 * 9, (3, 3, 64, 128)),
    ("fc1", 2048, (2048, 512)),
    ("fc2", 512, (512, 10)),
)
N_PARAMS = sum(math.prod(s) + s[-1] for _, _, s in LAYOUT)  # 1,147,466


class Layers(NamedTuple):
    conv: Callable  # (x, w, b) -> y, 3x3 "same"
    pool: Callable  # (x) -> y, 2x2 max, stride 2
    dense: Callable  # (x, w, b) -> y
    dropout: Callable  # (x, rate, key) -> y


def init(key: jax.Array) -> Params:
    """One replica's parameters, drawn as PyTorch's defaults draw them.

    PyTorch's Conv2d/Linear use kaiming_uniform(a=sqrt(5)) for weights and
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for biases; both reduce to that bound.
    """
    params = {}
    for k, (name, fan_in, shape) in zip(jax.random.split(key, len(LAYOUT)), LAYOUT):
        w_key, b_key = jax.random.split(k)
        bound = 1.0 / math.sqrt(fan_in)
        params[name] = {
            "w": jax.random.uniform(w_key, shape, jnp.float32, -bound, bound),
            "b": jax.random.uniform(b_key, shape[-1:], jnp.float32, -bound, bound),
        }
    return params


def apply(
    params: Params,
    images: jax.Array,
    *,
    layers: Layers,
    dropout: float = 0.0,
    dropout_key: jax.Array | None = None,
) -> jax.Array:
    """Logits for images scaled to [-1, 1].

    Args:
      params: from `init` (or stacked inits, for batched layers).
      images: float (B, 32, 32, 3), or (R, B, 32, 32, 3) for batched layers,
        or (1, B, 32, 32, 3): one batch all R replicas read.
      layers: `single_layers()` or `batched_layers(...)`.
      dropout: drop rate after fc1; used only when `dropout_key` is given.
      dropout_key: None for evaluation; a key (or (R,) keys) for training.
    Returns:
      logits (B, 10), or (R, B, 10), float32 (with bfloat16 layers too: the
      loss and the class are taken in float32, as under torch's autocast).
    """
    x = embed(params, images, layers=layers)
    if dropout_key is not None and dropout > 0:
        x = layers.dropout(x, dropout, dropout_key)
    return layers.dense(x, **params["fc2"]).astype(jnp.float32)


def embed(params: Params, images: jax.Array, *, layers: Layers) -> jax.Array:
    """Penultimate activations (fc1 + ReLU, before dropout): (..., B, 512).

    What `apply` feeds its last layer; feature-space detectors read it.
    """
    x = images
    for name in ("conv1", "conv2", "conv3"):
        x = layers.pool(jax.nn.relu(layers.conv(x, **params[name])))
    x = x.reshape(*x.shape[:-3], -1)
    return jax.nn.relu(layers.dense(x, **params["fc1"]))


def normalize(images_u8: jax.Array) -> jax.Array:
    """uint8 pixels to [-1, 1]: Normalize(mean=0.5, std=0.5) after ToTensor."""
    return images_u8.astype(jnp.float32) / 127.5 - 1.0


def _dropout_one(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _conv_one(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    y = lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return _add_bias(y, b)


def _add_bias(y: jax.Array, b: jax.Array) -> jax.Array:
    return y + b.reshape((1,) * (y.ndim - 1) + (-1,))


def _pool_one(x: jax.Array) -> jax.Array:
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def single_layers() -> Layers:
    """Plain layers for one replica: the reference the batched kernels must match."""
    return Layers(
        conv=_conv_one,
        pool=_pool_one,
        dense=lambda x, w, b: _add_bias(x @ w, b),
        dropout=_dropout_one,
    )


def batched_layers(impl: str = "auto", compute_dtype: str = "float32") -> Layers:
    """Replica-batched layers from `kernels/`: every array has a leading axis R.

    compute_dtype "bfloat16" is mixed precision as torch's CPU autocast does it:
    products in bfloat16, sums in float32, every layer's output (the
    activations between layers) rounded to bfloat16; the parameters, their
    gradients and the optimizer stay float32 (the kernels cast the weights).
    """
    dtype = jnp.dtype(compute_dtype)
    out = None if dtype == jnp.float32 else dtype  # float32: as the input
    return Layers(
        conv=lambda x, w, b: kconv.conv3x3(x, w, b, impl=impl, compute_dtype=dtype,
                                           out_dtype=out),
        pool=lambda x: kpool.maxpool2(x),
        dense=lambda x, w, b: kdense.dense(x, w, b, compute_dtype=dtype,
                                           out_dtype=out),
        dropout=jax.vmap(_dropout_one, in_axes=(0, None, 0)),
    )


def _replica_apply(recipe: Recipe):
    layers = batched_layers(recipe.kernel, recipe.compute_dtype)

    def batched(params, x, *, dropout=0.0, dropout_key=None):
        return apply(params, x, layers=layers, dropout=dropout,
                     dropout_key=dropout_key)

    return batched


# The reference SimpleCNN as the engine sees it: softmax cross-entropy over 10
# logits, and torch.optim.Adam's defaults: betas (0.9, 0.999), eps 1e-8.
SIMPLE_CNN = ModelSpec(
    init=init,
    make_apply=_replica_apply,
    prepare=normalize,
    loss=optax.softmax_cross_entropy_with_integer_labels,
    predict=lambda logits: logits.argmax(-1),
    optimizer=reference_adam,
    shares_input=True,
)
