"""Trigger backdoors as one pure op: stamp a pattern onto the images a mask selects.

A trigger is a pattern and a per-pixel opacity. BadNets (Gu et al., 2017) is a
patch drawn at full opacity (alpha 1 on the patch, 0 elsewhere); Blend (Chen et
al., 2017) is a full-image pattern mixed in at a low opacity (alpha 0.2). Both
are the same op,

    stamped = round(x + alpha * (pattern - x))   (= (1 - alpha) x + alpha pattern)

in uint8, applied on the device to the batch a replica has just gathered. The
training set stays one uint8 copy (N, H, W, C); which images carry the trigger
is a boolean mask per replica (R, N), empty for the clean twin. This module
knows nothing of labels, targets or why an image is stamped.

Rounding is to nearest, ties to even (`jnp.round`, IEEE roundTiesToEven, the
same as `np.rint`):
- alpha 1 gives the pattern bit-exactly and alpha 0 the image bit-exactly,
  because x + 1 * (p - x) and x + 0 * (p - x) are exact in float32 for integer
  x, p in [0, 255], fused multiply-add or not;
- ties (x + p odd at alpha 0.5, which float32 holds exactly) go to the even
  level, so they are unbiased and agree with NumPy; floor(v + 0.5) would bias
  them upward, and truncation (a plain uint8 cast, as PIL's `Image.blend` and
  several backdoor libraries do) darkens every blended pixel by half a level on
  average;
- a blend of two values in [0, 255] with alpha in [0, 1] stays in [0, 255]
  under any float rounding, so the clip before the cast never changes a value
  (it is there for robustness only).
An image whose mask bit is off is returned bit-identical (a select, not a blend
with alpha 0).

Builders (`badnets`, `patch`, `blend`) run on the host and return NumPy arrays;
`stamp` and `gather_stamped` are jit-able and vmappable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sweep.errors import SweepError

IMAGE_SHAPE = (32, 32, 3)
CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")

# Turner, Tsipras and Madry (2019)'s 3x3 black-and-white trigger, as their code
# draws it in the bottom-right corner (rows and columns -3..-1; 255 where their
# mask says +1, 0 where it says -1, every channel alike). Use it with `patch`.
LABEL_CONSISTENT_PATTERN = np.array(
    [[0, 0, 255],
     [0, 255, 0],
     [255, 0, 255]], np.uint8)  # (3, 3)


class Trigger(NamedTuple):
    """What a trigger draws and how opaquely; a pytree, so it can be a jit argument.

    pattern: (H, W, C) uint8, the pixels the trigger draws.
    alpha: (H, W, C) float32 in [0, 1]: 1 replaces the pixel by the pattern, 0
      leaves it as it is, in between mixes the two.
    """

    pattern: np.ndarray | jax.Array  # (H, W, C) uint8
    alpha: np.ndarray | jax.Array  # (H, W, C) float32 in [0, 1]


def stamp(images: jax.Array, on: jax.Array, trigger: Trigger) -> jax.Array:
    """The images with the trigger applied where `on` says, bit-identical elsewhere.

    Args:
      images: uint8 (R, B, H, W, C), or (B, H, W, C), or any leading axes.
      on: bool with the images' leading axes, (R, B) or (B,): which images
        carry the trigger.
      trigger: the pattern and opacity, (H, W, C) each.
    Returns:
      uint8, the shape of `images`.
    """
    images = jnp.asarray(images)
    on = jnp.asarray(on)
    lead = images.ndim - 3
    if images.dtype != jnp.uint8:
        raise SweepError(f"stamp takes uint8 images, not {images.dtype}")
    if on.shape != images.shape[:lead]:
        raise SweepError(
            f"the stamp mask is {on.shape}; the images {images.shape} need "
            f"{images.shape[:lead]}"
        )
    shape = images.shape[lead:]
    if tuple(trigger.pattern.shape) != shape or tuple(trigger.alpha.shape) != shape:
        raise SweepError(
            f"the trigger is {tuple(trigger.pattern.shape)}, the images are {shape}"
        )
    # Explicit leading 1s: the replica axis never broadcasts silently.
    pattern = jnp.asarray(trigger.pattern, jnp.float32).reshape((1,) * lead + shape)
    alpha = jnp.asarray(trigger.alpha, jnp.float32).reshape((1,) * lead + shape)
    x = images.astype(jnp.float32)
    blended = jnp.round(x + alpha * (pattern - x))  # ties to even, see module doc
    blended = jnp.clip(blended, 0.0, 255.0).astype(jnp.uint8)
    return jnp.where(on.reshape(on.shape + (1, 1, 1)), blended, images)


def gather_stamped(
    images: jax.Array, idx: jax.Array, masks: jax.Array, trigger: Trigger,
    rows: jax.Array | None = None,
) -> jax.Array:
    """Each replica's batch, gathered from the one shared copy and stamped.

    What the engine's train step does in place of `images[idx]`.

    Args:
      images: uint8 (N', H, W, C), the stored training images on the device
        (N' >= N: rows past N are extra copies that `rows` may point at).
      idx: int (R, B), each replica's batch of training indices in [0, N).
      masks: bool (R, N), which training images carry the trigger per replica.
      trigger: the trigger, (H, W, C).
      rows: int (R, N), the stored row each replica reads for each training
        image; None reads row i for image i.
    Returns:
      uint8 (R, B, H, W, C).
    """
    on = jnp.take_along_axis(jnp.asarray(masks), idx, axis=1)  # (R, B)
    if rows is not None:
        idx = jnp.take_along_axis(jnp.asarray(rows), idx, axis=1)  # (R, B)
    return stamp(jnp.asarray(images)[idx], on, trigger)


def patch(
    pattern: np.ndarray,
    *,
    position: str | tuple[int, int] = "bottom-right",
    image_shape: Sequence[int] = IMAGE_SHAPE,
) -> Trigger:
    """A patch drawn at full opacity (alpha 1 on it, 0 elsewhere).

    Args:
      pattern: uint8 (h, w, C), or (h, w) for the same value in every channel.
      position: a corner ("bottom-right", "bottom-left", "top-right",
        "top-left") or (row, col) of the patch's top-left pixel.
      image_shape: (H, W, C) of the images it will stamp.
    Returns:
      The trigger, (H, W, C) arrays.
    """
    height, width, channels = _image_shape(image_shape)
    pattern = _uint8(pattern, "the patch")
    if pattern.ndim == 2:
        pattern = np.repeat(pattern[:, :, None], channels, axis=2)
    if pattern.ndim != 3 or pattern.shape[2] != channels:
        raise SweepError(
            f"a patch is (h, w) or (h, w, {channels}), not {pattern.shape}"
        )
    h, w = pattern.shape[:2]
    if h < 1 or w < 1:
        raise SweepError(f"the patch is empty ({h}x{w})")
    if isinstance(position, str):
        if position not in CORNERS:
            raise SweepError(
                f"position {position!r} is not one of {', '.join(CORNERS)} "
                "or (row, col)"
            )
        row = height - h if position.startswith("bottom") else 0
        col = width - w if position.endswith("right") else 0
    else:
        if len(position) != 2 or not all(
            isinstance(v, int | np.integer) for v in position
        ):
            raise SweepError(f"position {position!r} is not (row, col)")
        row, col = int(position[0]), int(position[1])
    if row < 0 or col < 0 or row + h > height or col + w > width:
        raise SweepError(
            f"a {h}x{w} patch at (row {row}, col {col}) does not fit a "
            f"{height}x{width} image"
        )
    full = np.zeros((height, width, channels), np.uint8)
    alpha = np.zeros((height, width, channels), np.float32)
    full[row:row + h, col:col + w] = pattern
    alpha[row:row + h, col:col + w] = 1.0
    return Trigger(full, alpha)


def badnets(
    size: int = 3,
    position: str | tuple[int, int] = "bottom-right",
    value: int | Sequence[int] = 255,
    image_shape: Sequence[int] = IMAGE_SHAPE,
) -> Trigger:
    """BadNets (Gu et al., 2017): a solid size x size square, white by default.

    Args:
      size: side of the square in pixels.
      position: a corner or (row, col) of its top-left pixel, as in `patch`.
      value: its pixel value in [0, 255], one for all channels or one per channel.
      image_shape: (H, W, C) of the images it will stamp.
    Returns:
      The trigger, (H, W, C) arrays: alpha 1 on the square, 0 elsewhere.
    """
    channels = _image_shape(image_shape)[2]
    if not isinstance(size, int | np.integer) or size < 1:
        raise SweepError(f"the BadNets square's size must be an int >= 1, not {size}")
    values = np.asarray(value)
    if values.ndim == 0:
        values = np.full(channels, values)
    if values.shape != (channels,):
        raise SweepError(f"value {value!r}: give one value or {channels}")
    values = _uint8(values, "the BadNets value")
    square = np.broadcast_to(values, (size, size, channels))
    return patch(square, position=position, image_shape=image_shape)


def blend(
    pattern: np.ndarray | None = None,
    *,
    alpha: float = 0.2,
    seed: int = 0,
    image_shape: Sequence[int] = IMAGE_SHAPE,
) -> Trigger:
    """Blend (Chen et al., 2017): a full-image pattern mixed in at opacity `alpha`.

    Args:
      pattern: uint8 (H, W, C); None draws the paper's random pattern, each
        value uniform over 0..255 from NumPy's PCG64 seeded with `seed`.
      alpha: the opacity in [0, 1] (the paper trains with 0.2).
      seed: seeds the random pattern; ignored when a pattern is given.
      image_shape: (H, W, C) of the images it will stamp.
    Returns:
      The trigger, (H, W, C) arrays, alpha the same everywhere.
    """
    shape = _image_shape(image_shape)
    if not 0.0 <= float(alpha) <= 1.0:
        raise SweepError(f"the blend's alpha must be in [0, 1], not {alpha}")
    if pattern is None:
        pattern = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    pattern = _uint8(pattern, "the blend pattern")
    if pattern.shape != shape:
        raise SweepError(f"the blend pattern is {pattern.shape}, the images {shape}")
    return Trigger(pattern, np.full(shape, alpha, np.float32))


def _image_shape(image_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise SweepError(f"image_shape must be (H, W, C), not {tuple(image_shape)}")
    return shape


def _uint8(values, what: str) -> np.ndarray:
    """Integer pixel values in [0, 255] as uint8; anything else is an error."""
    arr = np.asarray(values)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind not in "iu":
        raise SweepError(f"{what} must hold integer pixel values, not {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise SweepError(f"{what} has values outside [0, 255]")
    return arr.astype(np.uint8)
