"""The course project's transfer-learning head as pure functions over a pytree.

Flatten -> Dense 256 ReLU -> Dropout 0.5 -> Dense 1 (a sigmoid logit), trained
with RMSprop and binary cross-entropy, batch 10, 10 epochs, as the Keras recipe
it copies (Keras 3 defaults everywhere: glorot_uniform kernels, zero biases,
RMSprop lr 1e-3, rho 0.9, epsilon 1e-7). Its inputs are frozen backbone
features (see `sweep.experiment.backbones`), held by the engine where SimpleCNN's images
would be; `HEAD` is the `ModelSpec` that makes a replica a head.

Written for one replica; the replica axis is added with `jax.vmap` at the edge.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from sweep.engine.spec import ModelSpec

HIDDEN = 256
# Keras clips probabilities to [eps, 1 - eps] before the log in
# binary_crossentropy (keras.config.epsilon(), 1e-7); matching that clip keeps
# the loss and its zero gradient at saturation the same as the recipe's.
KERAS_EPSILON = 1e-7

Params = dict[str, dict[str, jax.Array]]


def init(key: jax.Array, n_features: int) -> Params:
    """One head's parameters: glorot_uniform kernels and zero biases (Keras')."""

    def glorot(k, fan_in, fan_out):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return jax.random.uniform(k, (fan_in, fan_out), jnp.float32, -limit, limit)

    k1, k2 = jax.random.split(key)
    return {
        "fc1": {"w": glorot(k1, n_features, HIDDEN), "b": jnp.zeros((HIDDEN,))},
        "fc2": {"w": glorot(k2, HIDDEN, 1), "b": jnp.zeros((1,))},
    }


def apply(
    params: Params,
    features: jax.Array,
    *,
    dropout: float = 0.0,
    dropout_key: jax.Array | None = None,
) -> jax.Array:
    """One head's logits (B, 1) for features (B, ...), flattened first.

    Dropout (inverted, as Keras' Dropout) applies only when `dropout_key` is given.
    """
    x = features.reshape(features.shape[0], -1)
    x = jax.nn.relu(x @ params["fc1"]["w"] + params["fc1"]["b"][None])
    if dropout_key is not None and dropout > 0:
        keep = jax.random.bernoulli(dropout_key, 1.0 - dropout, x.shape)
        x = jnp.where(keep, x / (1.0 - dropout), 0.0)
    return x @ params["fc2"]["w"] + params["fc2"]["b"][None]


def binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Keras' binary_crossentropy on sigmoid(logits[..., 0]): (...,) per example."""
    p = jnp.clip(jax.nn.sigmoid(logits[..., 0]), KERAS_EPSILON, 1.0 - KERAS_EPSILON)
    y = labels.astype(p.dtype)
    return -(y * jnp.log(p) + (1.0 - y) * jnp.log(1.0 - p))


def predict(logits: jax.Array) -> jax.Array:
    """Class 1 where the sigmoid output is above 0.5 (Keras' binary accuracy)."""
    return (logits[..., 0] > 0).astype(jnp.int32)


def rmsprop(lr: float) -> optax.GradientTransformation:
    """Keras 3's RMSprop defaults: v = 0.9 v + 0.1 g^2; w -= lr g / sqrt(v + 1e-7).

    Keras 3 adds epsilon inside the square root (keras/src/optimizers/rmsprop.py:
    `denominator = velocity + epsilon`, then `sqrt(denominator)`), as does optax
    with eps_in_sqrt=True; the velocity starts at zero (optax initial_scale 0).
    """
    return optax.rmsprop(lr, decay=0.9, eps=1e-7, initial_scale=0.0,
                         eps_in_sqrt=True)


def _make_apply(recipe):
    def apply_batched(params, x, *, dropout=0.0, dropout_key=None):
        if dropout_key is None or dropout == 0:
            return jax.vmap(apply)(params, x)
        return jax.vmap(lambda p, f, k: apply(p, f, dropout=dropout, dropout_key=k))(
            params, x, dropout_key
        )

    return apply_batched


def spec(n_features: int) -> ModelSpec:
    """The head as an engine model over float features of `n_features` values."""
    return ModelSpec(
        init=lambda key: init(key, n_features),
        make_apply=_make_apply,
        prepare=lambda x: x.astype(jnp.float32),
        loss=binary_cross_entropy,
        predict=predict,
        optimizer=rmsprop,
    )
