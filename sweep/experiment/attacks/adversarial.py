"""Adversarial perturbations for the clean-label backdoor (Turner, Tsipras, Madry 2019).

"Label-Consistent Backdoor Attacks": the attacker stamps the trigger only on
images of the target class and keeps their true labels, after first making
them hard to classify with an adversarial perturbation, so the model trained on
them leans on the trigger rather than on the image. The perturbation is
untargeted L-inf PGD (Madry et al., 2018) that raises the loss of the true
label under a surrogate model, applied to the images before stamping.

Units: `eps` and `step` are in [0, 1] pixel units as the papers write them
(8/255 is 8 uint8 levels); the iterates live in float [0, 255] pixel space,
the model sees them through `prepare` (the project's models take x / 127.5 - 1,
so one level is 2/255 there), and the result is quantised to uint8: rounded
half to even, then clipped to the ball of floor(eps * 255) levels around the
clean image and to [0, 255].

Pure JAX, compiled once per (model, batch size): eps, step, the step count
and the random start are traced arguments. The attack is batched over images
with `lax.map` and its steps run in `lax.fori_loop`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sweep.engine import simple_cnn
from sweep.errors import SweepError

ApplyFn = Callable[..., jax.Array]  # (params, images float (B, H, W, C)) -> (B, K)


@functools.cache
def simple_cnn_apply() -> ApplyFn:
    """The SimpleCNN surrogate for one model: `simple_cnn.apply` with single layers.

    One object per process, so `pgd_perturb` compiles once for it.
    """
    return functools.partial(simple_cnn.apply, layers=simple_cnn.single_layers())


def pgd_perturb(
    apply_fn: ApplyFn,
    params,
    images_u8: np.ndarray,
    labels: np.ndarray,
    *,
    key: jax.Array,
    eps: float = 8 / 255,
    step: float = 2 / 255,
    steps: int = 20,
    random_start: bool = True,
    batch_size: int = 256,
    prepare: Callable[[jax.Array], jax.Array] = simple_cnn.normalize,
    ids: np.ndarray | None = None,
) -> np.ndarray:
    """Untargeted L-inf PGD on the true labels, quantised back to uint8.

    Defaults are Madry et al.'s CIFAR-10 attack (eps 8/255, step 2/255, a
    uniform random start in the ball), with 20 steps.

    Args:
      apply_fn: `(params, prepared images (B, H, W, C)) -> logits (B, K)` for
        one model, e.g. `simple_cnn_apply()`; evaluated without dropout.
      params: the surrogate's parameters (e.g. `simple_cnn.init` then training).
      images_u8: uint8 (N, H, W, C), the clean images.
      labels: int (N,), their true labels.
      key: the random start's key; image i uses `fold_in(key, ids[i])`, so the
        result does not depend on `batch_size`'s grouping of the draws.
      eps: the L-inf radius in [0, 1] pixel units.
      step: the signed-gradient step in [0, 1] pixel units.
      steps: PGD iterations.
      random_start: start from a uniform point in the ball (else the image).
      batch_size: images per batch inside the compiled map.
      prepare: uint8-scale float pixels (B, H, W, C) -> model inputs.
      ids: int (N,) non-negative, each image's own number (e.g. its training
        index), so its random start does not depend on which other images are
        attacked with it; None: 0..N-1.
    Returns:
      uint8 (N, H, W, C): within floor(eps * 255) levels of `images_u8`.
    """
    images_u8 = np.asarray(images_u8)
    labels = np.asarray(labels)
    if images_u8.dtype != np.uint8 or images_u8.ndim != 4:
        raise SweepError(f"PGD takes uint8 (N, H, W, C) images, not "
                         f"{images_u8.dtype} {images_u8.shape}")
    if labels.shape != images_u8.shape[:1]:
        raise SweepError(f"labels {labels.shape} do not match {len(images_u8)} images")
    if not (0 <= eps <= 1 and 0 <= step <= 1 and steps >= 0 and batch_size >= 1):
        raise SweepError(f"PGD settings out of range: eps {eps}, step {step}, "
                         f"steps {steps}, batch_size {batch_size}")
    n = len(images_u8)
    ids = np.arange(n) if ids is None else np.asarray(ids)
    if ids.shape != (n,) or (n and ids.min() < 0):
        raise SweepError(f"ids must be {n} non-negative numbers, not {ids.shape}")
    if n == 0:
        return images_u8.copy()
    batch = min(int(batch_size), n)
    attack = _make_pgd(apply_fn, prepare, batch)
    pad = -n % batch
    x = np.concatenate([images_u8, np.zeros((pad, *images_u8.shape[1:]), np.uint8)])
    y = np.concatenate([labels.astype(np.int32), np.zeros(pad, np.int32)])
    ids = np.concatenate([ids.astype(np.uint32), np.zeros(pad, np.uint32)])
    radius = float(eps) * 255  # uint8 levels
    # The ball the uint8 result must stay in: whole levels, never past eps.
    levels = math.floor(radius + 1e-6)
    settings = (np.float32(radius), np.float32(float(step) * 255),
                np.int32(steps), np.float32(levels), np.bool_(random_start))
    out = attack(params, jnp.asarray(x), jnp.asarray(y), jnp.asarray(ids), key,
                 *settings)
    return np.asarray(jax.device_get(out))[:n]


@functools.lru_cache(maxsize=8)
def _make_pgd(apply_fn, prepare, batch_size: int):
    """A jitted `(params, x_u8 (N, ...), y (N,), ids (N,), key, radius, step,
    steps, levels, random_start) -> uint8 (N, ...)`, N a multiple of batch_size.

    radius, step and levels are in uint8 levels; the settings are traced
    arguments, so one compilation serves every eps, step and step count.
    """

    def loss(params, x, y):
        logits = apply_fn(params, prepare(x))  # (B, K)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()

    grad = jax.grad(loss, argnums=1)

    def one_batch(params, settings, batch):
        radius, step, steps, levels, random_start = settings
        x_u8, y, keys = batch  # (B, H, W, C), (B,), (B,) keys
        x0 = x_u8.astype(jnp.float32)
        noise = jax.vmap(lambda k: jax.random.uniform(
            k, x0.shape[1:], jnp.float32, -1.0, 1.0))(keys)
        x = jnp.clip(x0 + jnp.where(random_start, radius, 0.0) * noise, 0.0, 255.0)

        def body(_, x):
            # Each image's loss depends on that image alone (no batch
            # statistics), so the gradient of the sum is per-image.
            x = x + step * jnp.sign(grad(params, x, y))
            return jnp.clip(jnp.clip(x, x0 - radius, x0 + radius), 0.0, 255.0)

        x = jax.lax.fori_loop(0, steps, body, x)
        x = jnp.clip(jnp.round(x), x0 - levels, x0 + levels)
        return jnp.clip(x, 0.0, 255.0).astype(jnp.uint8)

    def attack(params, x_u8, y, ids, key, *settings):
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, ids)
        batches = (x_u8.reshape(-1, batch_size, *x_u8.shape[1:]),
                   y.reshape(-1, batch_size),
                   keys.reshape(-1, batch_size, *keys.shape[1:]))
        out = jax.lax.map(functools.partial(one_batch, params, settings), batches)
        return out.reshape(x_u8.shape)

    return jax.jit(attack)
