"""A Blend trigger from an image file (Chen et al., 2017 blend a Hello Kitty photo).

Apart from `sweep.engine.triggers` because it reads files with Pillow: the trigger
op itself lives with the engine, which neither reads files nor imports Pillow.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from sweep.engine import triggers
from sweep.errors import SweepError, one_line

# Raster formats only, as sweep.data.decode reads them.
PIL_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")


def load_pattern(
    path: str | os.PathLike, image_shape: Sequence[int] = triggers.IMAGE_SHAPE
) -> np.ndarray:
    """An image file as a uint8 (H, W, C) pattern, resized to the images' size.

    Args:
      path: a JPEG, PNG, BMP or WebP file.
      image_shape: (H, W, C) with C 3 (RGB) or 1 (grayscale).
    Returns:
      uint8 (H, W, C). A file already H x W is taken pixel for pixel; any other
      size is resized with Pillow's bicubic filter.
    """
    height, width, channels = (int(v) for v in image_shape)
    if channels not in (1, 3):
        raise SweepError(f"an image trigger needs 1 or 3 channels, not {channels}")
    try:
        with Image.open(path, formats=PIL_FORMATS) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            if im.size != (width, height):
                im = im.resize((width, height), Image.Resampling.BICUBIC)
            pattern = np.asarray(im, np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise SweepError(
            f"{path} could not be read as a trigger image ({one_line(e)})"
        ) from None
    return pattern.reshape(height, width, channels)


def from_image_file(
    path: str | os.PathLike,
    *,
    alpha: float = 0.2,
    image_shape: Sequence[int] = triggers.IMAGE_SHAPE,
) -> triggers.Trigger:
    """A Blend trigger whose pattern is an image file (see `load_pattern`).

    Args:
      path: the image file.
      alpha: the opacity in [0, 1].
      image_shape: (H, W, C) of the images it will stamp.
    Returns:
      `triggers.blend(pattern, alpha=alpha)`.
    """
    pattern = load_pattern(path, image_shape)
    return triggers.blend(pattern, alpha=alpha, image_shape=image_shape)
