"""PGD for the clean-label backdoor: stays in the eps ball, stays uint8, and
raises a briefly trained SimpleCNN's loss on real sample images."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sweep.data import sample
from sweep.engine import simple_cnn
from sweep.errors import SweepError
from sweep.experiment.attacks import adversarial


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return sample.load(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def surrogate(data):
    """SimpleCNN after 40 Adam steps of 64 shuffled sample images (about 45%
    accurate on the sample's test images)."""
    apply = adversarial.simple_cnn_apply()
    tx = optax.adam(1e-3)

    def loss(p, xb, yb):
        logits = apply(p, simple_cnn.normalize(xb))
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    # A Python loop over a jitted step: in lax.scan, XLA's CPU backend ran
    # SimpleCNN's weight gradients about 20x slower (6.5 s vs 0.35 s a step).
    @jax.jit
    def step(p, opt, xb, yb):
        upd, opt = tx.update(jax.grad(loss)(p, xb, yb), opt, p)
        return optax.apply_updates(p, upd), opt

    params = simple_cnn.init(jax.random.key(0))
    opt = tx.init(params)
    # The sample is sorted by class: shuffle, or every batch is one class.
    order = np.random.default_rng(0).permutation(len(data.train_labels))
    for i in range(40):
        batch = order[64 * i:64 * (i + 1)]
        params, opt = step(params, opt, data.train_images[batch],
                           data.train_labels[batch])
    return apply, params


def per_image_loss(apply, params, images_u8, labels):
    logits = apply(params, simple_cnn.normalize(jnp.asarray(images_u8)))
    return np.asarray(optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.asarray(labels)))


def test_pgd_stays_in_the_ball_and_raises_the_surrogate_loss(data, surrogate):
    apply, params = surrogate
    # Test images from every class (the sample is sorted by class).
    pick = np.random.default_rng(1).permutation(len(data.test_labels))
    held_out = apply(params,
                     simple_cnn.normalize(jnp.asarray(data.test_images[pick[:500]])))
    assert (np.argmax(held_out, 1) == data.test_labels[pick[:500]]).mean() > 0.3
    images, labels = data.test_images[pick[:64]], data.test_labels[pick[:64]]
    clean_loss = per_image_loss(apply, params, images, labels)
    clean_acc = (np.argmax(apply(params, simple_cnn.normalize(jnp.asarray(images))), 1)
                 == labels).mean()

    adv = adversarial.pgd_perturb(apply, params, images, labels,
                                  key=jax.random.key(1), steps=5, batch_size=64)
    assert adv.dtype == np.uint8 and adv.shape == images.shape
    diff = adv.astype(int) - images.astype(int)
    assert np.abs(diff).max() <= 8  # eps 8/255 = 8 levels
    assert np.abs(diff).max() == 8  # ... and PGD uses the budget
    adv_loss = per_image_loss(apply, params, adv, labels)
    assert adv_loss.mean() > clean_loss.mean() + 0.2
    assert (adv_loss > clean_loss).mean() > 0.9
    adv_acc = (np.argmax(apply(params, simple_cnn.normalize(jnp.asarray(adv))), 1)
               == labels).mean()
    assert adv_acc < clean_acc


def test_pgd_eps_units_levels_and_determinism(data, surrogate):
    apply, params = surrogate
    images, labels = data.test_images[:40], data.test_labels[:40]
    key = jax.random.key(3)
    a = adversarial.pgd_perturb(apply, params, images, labels, key=key,
                                eps=4 / 255, step=1 / 255, steps=3, batch_size=16)
    b = adversarial.pgd_perturb(apply, params, images, labels, key=key,
                                eps=4 / 255, step=1 / 255, steps=3, batch_size=16)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - images).max() <= 4
    # A radius of 5.5 levels leaves whole levels only: at most 5.
    c = adversarial.pgd_perturb(apply, params, images, labels, key=key,
                                eps=5.5 / 255, step=2 / 255, steps=3, batch_size=16)
    assert np.abs(c.astype(int) - images).max() == 5
    # An image's random start follows its id, not the images beside it.
    ids = np.arange(100, 140)
    full = adversarial.pgd_perturb(apply, params, images, labels, key=key,
                                   eps=4 / 255, step=1 / 255, steps=3, batch_size=16,
                                   ids=ids)
    pick = np.arange(7, 40, 3)
    part = adversarial.pgd_perturb(apply, params, images[pick], labels[pick], key=key,
                                   eps=4 / 255, step=1 / 255, steps=3, batch_size=16,
                                   ids=ids[pick])
    np.testing.assert_array_equal(part, full[pick])
    assert not np.array_equal(full, a)
    # No budget, or no steps from the image itself: the images come back.
    same = adversarial.pgd_perturb(apply, params, images, labels, key=key,
                                   eps=0.0, batch_size=16)
    np.testing.assert_array_equal(same, images)
    same = adversarial.pgd_perturb(apply, params, images, labels, key=key,
                                   steps=0, random_start=False, batch_size=16)
    np.testing.assert_array_equal(same, images)


def test_pgd_refuses_bad_inputs(surrogate):
    apply, params = surrogate
    x = np.zeros((4, 32, 32, 3), np.uint8)
    with pytest.raises(SweepError, match="uint8"):
        adversarial.pgd_perturb(apply, params, x.astype(np.float32), np.zeros(4),
                                key=jax.random.key(0))
    with pytest.raises(SweepError, match="labels"):
        adversarial.pgd_perturb(apply, params, x, np.zeros(3), key=jax.random.key(0))
    with pytest.raises(SweepError, match="ids must be"):
        adversarial.pgd_perturb(apply, params, x, np.zeros(4), key=jax.random.key(0),
                                ids=np.arange(-1, 3))
    with pytest.raises(SweepError, match="out of range"):
        adversarial.pgd_perturb(apply, params, x, np.zeros(4), key=jax.random.key(0),
                                eps=8.0)
