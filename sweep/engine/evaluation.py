"""Evaluation: every replica's model on one shared set of images.

The test set (padded to whole eval batches, `pad_eval_set`) goes through each
replica's model batch by batch inside one compiled call; the batch is prepared
once for all replicas (`replica_logits`). Compiled under `kernels.invariance`:
a replica's outputs do not depend on the others in its chunk.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kernels import invariance, replica_map
from sweep.engine import simple_cnn
from sweep.engine.simple_cnn import SIMPLE_CNN
from sweep.engine.spec import ModelSpec, Recipe


def make_log_probs(recipe: Recipe, spec: ModelSpec = SIMPLE_CNN):
    """A jitted `(params, images) -> log_probs (R, N, K)` over whole eval batches
    (see `pad_eval_set`), compiled under `kernels.invariance`: a replica's
    outputs do not depend on the others in its chunk."""
    logits_of = replica_logits(recipe, spec)

    def log_probs(params, images):
        r = jax.tree.leaves(params)[0].shape[0]
        xs = images.reshape(-1, recipe.eval_batch_size, *images.shape[1:])

        def body(_, x_u8):
            return None, jax.nn.log_softmax(logits_of(params, x_u8))  # (R, EB, K)

        _, out = jax.lax.scan(body, None, xs)  # (NB, R, EB, K)
        return out.transpose(1, 0, 2, 3).reshape(r, -1, out.shape[-1])

    return invariance.jit(log_probs)


def make_predict(recipe: Recipe):
    """A jitted `(params, images) -> (log_probs (R, N, K), features (R, N, 512))`.

    images: uint8, padded to whole eval batches (see `pad_eval_set`). Features
    are the penultimate activations (`simple_cnn.embed`), for feature-space detectors.
    """
    layers = simple_cnn.batched_layers(recipe.kernel, recipe.compute_dtype)

    def predict(params, images):
        r = jax.tree.leaves(params)[0].shape[0]
        xs = images.reshape(-1, recipe.eval_batch_size, *images.shape[1:])

        def body(_, x_u8):
            x = simple_cnn.normalize(x_u8)[None]  # one input for the R replicas
            feats = simple_cnn.embed(params, x, layers=layers)  # (R, EB, 512)
            logits = layers.dense(feats, **params["fc2"])
            return None, (jax.nn.log_softmax(logits), feats)

        _, (logp, feats) = jax.lax.scan(body, None, xs)  # (NB, R, EB, .)
        logp = logp.transpose(1, 0, 2, 3).reshape(r, -1, logp.shape[-1])
        feats = feats.transpose(1, 0, 2, 3).reshape(r, -1, feats.shape[-1])
        return logp, feats

    return invariance.jit(predict)


def make_evaluate(recipe: Recipe, spec: ModelSpec = SIMPLE_CNN, *,
                  replicas: str = "auto"):
    """A jitted `(params, images, labels) -> (loss_sum (R,), confusion (R, K, K))`.

    images/labels: the test set padded to a multiple of the eval batch, with
    label -1 on the padding (see `pad_eval_set`). `replicas`: the forward
    passes all at once or one replica after another (`replica_logits`).
    """
    logits_of = replica_logits(recipe, spec, replicas)
    k = recipe.n_classes

    def evaluate(params, images, labels):
        r = jax.tree.leaves(params)[0].shape[0]
        eb = recipe.eval_batch_size
        xs = images.reshape(-1, eb, *images.shape[1:])
        ys = labels.reshape(-1, eb)

        def body(carry, batch):
            loss_sum, confusion = carry
            x_u8, y = batch
            logits = logits_of(params, x_u8)  # (R, EB, L)
            valid = y >= 0
            y_r = jnp.broadcast_to(jnp.where(valid, y, 0), (r, eb))
            ce = spec.loss(logits, y_r)
            loss_sum = loss_sum + (ce * valid[None]).sum(-1)
            # Float counts: integer matmuls are slow or missing on accelerators,
            # and f32 holds whole numbers exactly far past any test set size.
            pred = jax.nn.one_hot(spec.predict(logits), k, dtype=jnp.float32)
            true = jax.nn.one_hot(y, k, dtype=jnp.float32)  # -1 -> all zeros
            confusion = confusion + jnp.einsum("bi,rbj->rij", true, pred)
            return (loss_sum, confusion), None

        init = (jnp.zeros((r,), jnp.float32), jnp.zeros((r, k, k), jnp.float32))
        (loss_sum, confusion), _ = jax.lax.scan(body, init, (xs, ys))
        return loss_sum, confusion.astype(jnp.int32)

    return invariance.jit(evaluate)


def replica_logits(recipe: Recipe, spec: ModelSpec, replicas: str = "auto"):
    """`(params, x_stored (EB, ...)) -> logits (R, EB, L)`: one evaluation batch
    that every replica reads, through each replica's model.

    The batch is prepared once. Where the spec's apply takes one input for all
    replicas (`ModelSpec.shares_input`), it gets it with a replica axis of 1
    (SimpleCNN's first layer then does its work on the batch once, not R times);
    otherwise the batch is broadcast to the R replicas. `replicas` (`kernels.
    replica_map`): all replicas in one pass, or one after another, each then
    reading the same prepared batch.
    """
    apply = spec.make_apply(recipe)

    def logits(params, x):  # x: (1, EB, ...), the prepared batch
        if spec.shares_input:
            return apply(params, x)
        r = jax.tree.leaves(params)[0].shape[0]
        return apply(params, jnp.broadcast_to(x, (r, *x.shape[1:])))

    run = replica_map.over_replicas(logits, impl=replicas)
    return lambda params, x_stored: run(params, spec.prepare(x_stored)[None],
                                        shared=(1,))


def pad_eval_set(
    images: np.ndarray, labels: np.ndarray, eval_batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pad the test set to whole eval batches; padded rows get label -1."""
    pad = -len(labels) % eval_batch_size
    images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels.astype(np.int32), np.full(pad, -1, np.int32)])
    return images, labels
