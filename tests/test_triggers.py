"""Trigger stamping: where the mask says and nowhere else, exact BadNets, Blend
against a NumPy reference, bit-identical unmasked images, jit/vmap agreement."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from sweep.engine import triggers
from sweep.errors import SweepError
from sweep.experiment.attacks import trigger_image

R, B, SHAPE = 3, 6, (8, 10, 3)


@pytest.fixture
def images() -> np.ndarray:
    # Values 1..254: every BadNets pixel (255) and every black pixel (0) changes.
    return np.random.default_rng(0).integers(1, 255, (R, B, *SHAPE), dtype=np.uint8)


@pytest.fixture
def on() -> np.ndarray:
    on = np.random.default_rng(1).random((R, B)) < 0.5
    on[0] = False  # the clean twin: an empty mask
    on[1, 0] = True
    return on


def blend_reference(x: np.ndarray, trigger: triggers.Trigger) -> np.ndarray:
    """(1 - alpha) x + alpha p in float64 with the trigger's float32 alphas,
    rounded half to even."""
    a = trigger.alpha.astype(np.float64)
    return np.rint((1 - a) * x + a * trigger.pattern).astype(np.uint8)


def test_badnets_stamps_the_square_exactly_where_the_mask_says(images, on):
    trig = triggers.badnets(size=3, image_shape=SHAPE)
    out = np.asarray(triggers.stamp(images, on, trig))
    assert out.dtype == np.uint8 and out.shape == images.shape
    changed = (out != images).any(-1)  # (R, B, H, W)
    square = np.zeros(SHAPE[:2], bool)
    square[-3:, -3:] = True
    expected = on[:, :, None, None] & square[None, None]
    np.testing.assert_array_equal(changed, expected)
    assert (out[on][:, -3:, -3:] == 255).all()
    np.testing.assert_array_equal(out[~on], images[~on])  # bit-identical


@pytest.mark.parametrize("position, corner", [
    ("bottom-right", (5, 7)), ("bottom-left", (5, 0)), ("top-right", (0, 7)),
    ("top-left", (0, 0)), ((2, 4), (2, 4)),
])
def test_patch_positions_and_values_are_bit_exact(images, on, position, corner):
    trig = triggers.patch(triggers.LABEL_CONSISTENT_PATTERN, position=position,
                          image_shape=SHAPE)
    out = np.asarray(triggers.stamp(images, on, trig))
    r, c = corner
    for i, j in zip(*np.nonzero(on)):
        expect = images[i, j].copy()
        expect[r:r + 3, c:c + 3] = triggers.LABEL_CONSISTENT_PATTERN[:, :, None]
        np.testing.assert_array_equal(out[i, j], expect)


def test_label_consistent_pattern_is_turner_et_al_bottom_right_mask():
    # Their code: ((row, col), +1 white / -1 black) in the bottom-right corner.
    mask = {(-1, -1): 1, (-1, -2): -1, (-1, -3): 1, (-2, -1): -1, (-2, -2): 1,
            (-2, -3): -1, (-3, -1): 1, (-3, -2): -1, (-3, -3): -1}
    img = np.full((32, 32, 3), 128, np.uint8)
    for (r, c), v in mask.items():
        img[r, c] = 255 if v > 0 else 0
    trig = triggers.patch(triggers.LABEL_CONSISTENT_PATTERN)
    out = triggers.stamp(np.full((1, 32, 32, 3), 128, np.uint8), np.ones(1, bool), trig)
    np.testing.assert_array_equal(np.asarray(out)[0], img)


def test_badnets_value_per_channel_and_single_image_batch():
    x = np.zeros((2, 5, 5, 3), np.uint8)
    trig = triggers.badnets(size=2, position="top-left", value=(10, 20, 30),
                            image_shape=(5, 5, 3))
    out = np.asarray(triggers.stamp(x, np.array([True, False]), trig))
    corner = np.broadcast_to([10, 20, 30], (2, 2, 3))
    np.testing.assert_array_equal(out[0, :2, :2], corner)
    assert out[0, 2:].sum() == 0 and out[0, :, 2:].sum() == 0 and out[1].sum() == 0


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.37, 1.0, 0.0])
def test_blend_matches_numpy_reference(images, on, alpha):
    trig = triggers.blend(alpha=alpha, seed=3, image_shape=SHAPE)
    out = np.asarray(triggers.stamp(images, on, trig))
    ref = blend_reference(images[on], trig)
    a = trig.alpha.astype(np.float64)
    exact = (1 - a) * images[on] + a * trig.pattern
    # float32 on the device against float64 here: they may round apart only
    # where the value is within float32 error of a half level.
    near_tie = np.abs(exact - np.floor(exact) - 0.5) < 1e-4
    if alpha in (0.5, 1.0, 0.0):  # exact in float32: ties are real and to even
        near_tie[:] = False
    np.testing.assert_array_equal(out[on][~near_tie], ref[~near_tie])
    assert np.abs(out[on].astype(int) - ref)[near_tie].max(initial=0) <= 1
    assert near_tie.mean() < 0.01
    np.testing.assert_array_equal(out[~on], images[~on])


def test_blend_half_ties_go_to_even():
    x = np.array([[[[0, 1, 2, 3]]]], np.uint8).reshape(1, 1, 4, 1)
    trig = triggers.Trigger(np.full((1, 4, 1), 1, np.uint8),
                            np.full((1, 4, 1), 0.5, np.float32))
    out = np.asarray(triggers.stamp(x, np.ones(1, bool), trig))
    # 0.5 -> 0, 1 -> 1, 1.5 -> 2, 2 -> 2
    np.testing.assert_array_equal(out.ravel(), [0, 1, 2, 2])


def test_blend_pattern_is_seeded_uniform_noise():
    a, b = triggers.blend(seed=5), triggers.blend(seed=5)
    c = triggers.blend(seed=6)
    np.testing.assert_array_equal(a.pattern, b.pattern)
    assert (a.pattern != c.pattern).mean() > 0.9
    assert a.pattern.dtype == np.uint8 and a.pattern.shape == (32, 32, 3)
    counts = np.bincount(a.pattern.ravel() // 64, minlength=4)
    assert counts.min() > 0.2 * a.pattern.size  # all four quarters of 0..255
    assert (a.alpha == np.float32(0.2)).all()


def test_stamp_under_jit_and_vmap_equals_eager(images, on):
    trig = triggers.blend(alpha=0.2, image_shape=SHAPE)
    eager = np.asarray(triggers.stamp(images, on, trig))
    jitted = np.asarray(jax.jit(triggers.stamp)(images, on, trig))
    per_replica = np.asarray(
        jax.jit(jax.vmap(triggers.stamp, in_axes=(0, 0, None)))(images, on, trig))
    np.testing.assert_array_equal(jitted, eager)
    np.testing.assert_array_equal(per_replica, eager)


def test_gather_stamped_is_stamp_of_the_gathered_batch():
    rng = np.random.default_rng(2)
    n = 20
    data = rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8)
    masks = rng.random((R, n)) < 0.3
    masks[0] = False
    idx = rng.integers(0, n, (R, B))
    trig = triggers.badnets(image_shape=SHAPE)
    out = np.asarray(jax.jit(triggers.gather_stamped)(data, idx, masks, trig))
    on = np.take_along_axis(masks, idx, 1)
    np.testing.assert_array_equal(out, np.asarray(triggers.stamp(data[idx], on, trig)))
    np.testing.assert_array_equal(out[0], data[idx[0]])  # the clean twin


def test_bad_inputs_are_refused(images, on):
    trig = triggers.badnets(image_shape=SHAPE)
    with pytest.raises(SweepError, match="mask"):
        triggers.stamp(images, on[0], trig)
    with pytest.raises(SweepError, match="uint8"):
        triggers.stamp(images.astype(np.float32), on, trig)
    with pytest.raises(SweepError, match="trigger is"):
        triggers.stamp(images, on, triggers.badnets())
    with pytest.raises(SweepError, match="does not fit"):
        triggers.badnets(size=4, position=(5, 0), image_shape=SHAPE)
    with pytest.raises(SweepError, match="position"):
        triggers.badnets(position="middle")
    with pytest.raises(SweepError, match="alpha"):
        triggers.blend(alpha=1.5)
    with pytest.raises(SweepError, match="outside"):
        triggers.badnets(value=256)
    with pytest.raises(SweepError, match="integer"):
        triggers.blend(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(SweepError, match="blend pattern"):
        triggers.blend(np.zeros((32, 32, 1), np.uint8))


def test_blend_from_image_file(tmp_path):
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "kitty.png")
    trig = trigger_image.from_image_file(tmp_path / "kitty.png", alpha=0.3)
    np.testing.assert_array_equal(trig.pattern, pixels)  # PNG, no resize: lossless
    assert (trig.alpha == np.float32(0.3)).all()
    # A smooth 64x64 ramp comes back as the same ramp at 32x32.
    ramp = np.add.outer(np.arange(64), np.arange(64)).astype(np.uint8)  # 0..126
    Image.fromarray(np.repeat(ramp[:, :, None], 3, 2)).save(tmp_path / "big.png")
    small = trigger_image.load_pattern(tmp_path / "big.png")
    assert small.shape == (32, 32, 3) and small.dtype == np.uint8
    expect = 2 * np.add.outer(np.arange(32), np.arange(32)) + 1  # block centres
    assert np.abs(small[:, :, 0].astype(int) - expect)[2:-2, 2:-2].max() <= 1
    gray = trigger_image.load_pattern(tmp_path / "kitty.png", (16, 16, 1))
    assert gray.shape == (16, 16, 1)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(SweepError, match="could not be read"):
        trigger_image.from_image_file(tmp_path / "junk.png")


def test_stamp_keeps_uint8_on_device():
    x = jnp.zeros((2, 32, 32, 3), jnp.uint8)
    out = jax.jit(triggers.stamp)(x, jnp.array([True, False]), triggers.blend())
    assert out.dtype == jnp.uint8
