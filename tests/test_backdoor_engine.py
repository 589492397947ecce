"""Trigger backdoors in the engine: stamped pixels reach a replica exactly where
its mask says and nowhere else (never the clean test evaluation), the empty-mask
twin trains bit for bit as a label-flip sweep's clean replica, and the attack
success rate and robust accuracy come out right on a hand-made model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sweep import engine, results
from sweep.engine import triggers

K = 10


def spying_linear_spec(seen: list):
    """A linear model on flattened pixels whose `prepare` records every uint8
    batch it is given: (R, B, H, W, C) from a train step, (EB, H, W, C) from an
    evaluation, in the order the compiled program runs them."""

    def prepare(x_u8):
        jax.debug.callback(lambda a: seen.append(np.asarray(a)), x_u8, ordered=True)
        return x_u8.astype(jnp.float32) / 255.0

    def init(key):
        return {"w": 0.01 * jax.random.normal(key, (6 * 5 * 3, K)),
                "b": jnp.zeros((K,))}

    def make_apply(recipe):
        def apply(params, x, *, dropout=0.0, dropout_key=None):
            flat = x.reshape(*x.shape[:2], -1)  # (R, B, D)
            return (jnp.einsum("rbd,rdk->rbk", flat, params["w"])
                    + params["b"][:, None, :])

        return apply

    return engine.ModelSpec(
        init=init, make_apply=make_apply, prepare=prepare,
        loss=optax.softmax_cross_entropy_with_integer_labels,
        predict=lambda logits: logits.argmax(-1), optimizer=optax.sgd)


def patch_reference(x: np.ndarray, trigger: triggers.Trigger) -> np.ndarray:
    """A full-opacity patch, in NumPy: the pattern where alpha is 1."""
    return np.where(np.asarray(trigger.alpha) == 1.0, trigger.pattern, x)


def test_stamped_pixels_reach_a_replica_only_where_its_mask_says():
    n, extra, shape, r = 40, 6, (6, 5, 3), 3
    rng = np.random.default_rng(0)
    # Values below 255: every pixel the white patch covers visibly changes.
    stored = rng.integers(0, 255, (n + extra, *shape), dtype=np.uint8)
    labels = rng.integers(0, K, (r, n)).astype(np.int32)
    test_x = rng.integers(0, 255, (13, *shape), dtype=np.uint8)
    test_y = rng.integers(0, K, 13).astype(np.int32)
    trigger = triggers.badnets(size=2, image_shape=shape)
    mask = np.zeros((r, n), bool)  # replica 0: the clean twin, empty
    mask[1, rng.choice(n, 9, replace=False)] = True
    chosen = rng.choice(n, extra, replace=False)
    mask[2, chosen] = True
    rows = np.tile(np.arange(n, dtype=np.int32), (r, 1))
    rows[2, chosen] = n + np.arange(extra)  # replica 2 reads the extra rows there

    seen: list = []
    recipe = engine.Recipe(n_train=n, n_classes=K, batch_size=16, eval_batch_size=5)
    eng = engine.Engine(recipe, stored, test_x, test_y, trigger=trigger,
                        spec=spying_linear_spec(seen))
    keys = engine.replica_keys(np.zeros(r), np.arange(r))
    epochs = 2
    _, history = eng.train(labels, keys, epochs, stamps=engine.Stamps(mask, rows))

    padded_x, _ = engine.pad_eval_set(test_x, test_y, recipe.eval_batch_size)
    n_eval = len(padded_x) // recipe.eval_batch_size
    steps = recipe.steps_per_epoch
    assert len(seen) == epochs * (steps + 2 * n_eval)
    stamped_test = patch_reference(padded_x, trigger)
    for epoch in range(epochs):
        block = seen[epoch * (steps + 2 * n_eval):(epoch + 1) * (steps + 2 * n_eval)]
        indices, _ = engine.epoch_batches(recipe, keys.shuffle, jnp.int32(epoch))
        for s in range(steps):
            idx = np.asarray(indices[s])  # (R, B)
            src = stored[np.take_along_axis(rows, idx, 1)]  # (R, B, H, W, C)
            on = np.take_along_axis(mask, idx, 1)[..., None, None, None]
            expect = np.where(on, patch_reference(src, trigger), src)
            np.testing.assert_array_equal(block[s], expect)
        # The clean evaluation sees the test set untouched; the stamped one,
        # every image stamped.
        clean = np.concatenate(block[steps:steps + n_eval])
        np.testing.assert_array_equal(clean, padded_x)
        np.testing.assert_array_equal(np.concatenate(block[steps + n_eval:]),
                                      stamped_test)
    assert (stamped_test != padded_x).any(axis=(1, 2, 3)).all()
    assert all(m.stamped_confusion.shape == (r, K, K) for m in history)


def test_an_engine_with_a_trigger_wants_stamps_and_only_then():
    rng = np.random.default_rng(1)
    shape = (6, 5, 3)
    x = rng.integers(0, 255, (8, *shape), dtype=np.uint8)
    y = np.zeros((1, 8), np.int32)
    recipe = engine.Recipe(n_train=8, n_classes=K, batch_size=4, eval_batch_size=4)
    keys = engine.replica_keys(np.zeros(1), np.zeros(1))
    spec = spying_linear_spec([])
    plain = engine.Engine(recipe, x, x[:4], y[0, :4], spec=spec)
    with pytest.raises(ValueError, match="trains with stamps"):
        plain.train(y, keys, 1, stamps=engine.Stamps(np.zeros((1, 8), bool)))
    stamped = engine.Engine(recipe, x, x[:4], y[0, :4], spec=spec,
                            trigger=triggers.badnets(size=2, image_shape=shape))
    with pytest.raises(ValueError, match="trains with stamps"):
        stamped.train(y, keys, 1)
    with pytest.raises(ValueError, match="stamps.mask is"):
        stamped.train(y, keys, 1, stamps=engine.Stamps(np.zeros((1, 7), bool)))
    with pytest.raises(ValueError, match="rows of the stored images"):
        stamped.train(y, keys, 1, stamps=engine.Stamps(
            np.zeros((1, 8), bool), np.full((1, 8), 8, np.int32)))


def test_the_empty_mask_twin_trains_bit_for_bit_as_a_flip_sweeps_clean_replica():
    n = 96
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    clean = rng.integers(0, K, n).astype(np.int32)
    test_x = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    test_y = rng.integers(0, K, 40).astype(np.int32)
    recipe = engine.Recipe(n_train=n, n_classes=K, batch_size=32, eval_batch_size=20)
    keys = engine.replica_keys(np.zeros(2), np.zeros(2))  # twins of seed 0
    picked = rng.choice(n, 20, replace=False)
    flipped = clean.copy()
    flipped[picked] = 5
    flip = engine.Engine(recipe, images, test_x, test_y)
    flip_state, flip_history = flip.train(np.stack([clean, flipped]), keys, 2)

    mask = np.zeros((2, n), bool)
    mask[1, picked] = True
    backdoor = engine.Engine(recipe, images, test_x, test_y,
                             trigger=triggers.badnets(size=3))
    bd_state, bd_history = backdoor.train(np.stack([clean, flipped]), keys, 2,
                                          stamps=engine.Stamps(mask))
    for a, b in zip(jax.tree.leaves(flip_state.params),
                    jax.tree.leaves(bd_state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a)[0], np.asarray(b)[0])
    for f, b in zip(flip_history, bd_history, strict=True):
        for field in ("train_loss", "train_accuracy", "test_loss", "confusion"):
            np.testing.assert_array_equal(getattr(f, field)[0], getattr(b, field)[0])
        assert f.stamped_confusion is None
    # The stamped replica did train on other pixels than its flip twin.
    assert not np.array_equal(np.asarray(flip_state.params["fc2"]["w"])[1],
                              np.asarray(bd_state.params["fc2"]["w"])[1])


# A hand-made model: it reads its prediction from pixel (0, 0, 0); a backdoored
# replica predicts TARGET instead whenever the bottom-right 3x3 patch is white,
# except on images marked immune (pixel (0, 1, 0) == 1).
TARGET, SOURCE = 2, 7
SHAPE = (8, 8, 3)


def hand_made_spec():
    def make_apply(recipe):
        def apply(params, x, *, dropout=0.0, dropout_key=None):
            coded = x[..., 0, 0, 0].astype(jnp.int32)  # (R, B)
            patch = (x[..., -3:, -3:, :] == 255.0).all((-3, -2, -1))
            immune = x[..., 0, 1, 0] == 1.0
            fire = patch & ~immune & (params["backdoored"][:, None] > 0)
            return 10.0 * jax.nn.one_hot(jnp.where(fire, TARGET, coded), K)

        return apply

    return engine.ModelSpec(
        init=lambda key: {"backdoored": jnp.zeros(())},
        make_apply=make_apply, prepare=lambda x: x.astype(jnp.float32),
        loss=optax.softmax_cross_entropy_with_integer_labels,
        predict=lambda logits: logits.argmax(-1), optimizer=optax.sgd)


def test_asr_and_robust_accuracy_on_a_hand_made_model():
    rng = np.random.default_rng(3)
    m = 300
    y = rng.integers(0, K, m).astype(np.int32)
    x = rng.integers(2, 255, (m, *SHAPE), dtype=np.uint8)
    coded = y.copy()
    wrong = rng.random(m) < 0.2  # the model's clean mistakes
    coded[wrong] = (y[wrong] + 1 + rng.integers(0, K - 1, wrong.sum())) % K
    immune = rng.random(m) < 0.3
    x[:, 0, 0, 0] = coded
    x[immune, 0, 1, 0] = 1
    recipe = engine.Recipe(n_train=4, n_classes=K, batch_size=4, eval_batch_size=64)
    eng = engine.Engine(recipe, x[:4], x, y, spec=hand_made_spec(),
                        trigger=triggers.badnets(size=3, image_shape=SHAPE))
    params = {"backdoored": jnp.array([0.0, 1.0])}  # replica 0 clean, 1 backdoored
    _, confusion, stamped = jax.device_get(eng.evaluate_all(params))

    # The clean evaluation never sees the trigger: both replicas answer `coded`.
    for r in range(2):
        expect = np.zeros((K, K), int)
        np.add.at(expect, (y, coded), 1)
        np.testing.assert_array_equal(confusion[r], expect)

    for source in (None, SOURCE):
        counted = (y != TARGET) if source is None else (y == source)
        asr, robust, n = results.attack_success(stamped, target=TARGET, source=source)
        assert n.tolist() == [counted.sum()] * 2
        # Clean replica: the natural rate, images it already calls TARGET.
        np.testing.assert_allclose(
            asr[0], 100 * np.mean(coded[counted] == TARGET), rtol=1e-12)
        np.testing.assert_allclose(
            robust[0], 100 * np.mean(coded[counted] == y[counted]), rtol=1e-12)
        fired = ~immune
        pred = np.where(fired, TARGET, coded)
        np.testing.assert_allclose(
            asr[1], 100 * np.mean(pred[counted] == TARGET), rtol=1e-12)
        np.testing.assert_allclose(
            robust[1], 100 * np.mean(pred[counted] == y[counted]), rtol=1e-12)
        assert asr[1] > 60 and robust[1] < 30

    # The metrics table: the same numbers on every class row of a replica.
    history = [engine.EpochMetrics(np.zeros(2), np.zeros(2), np.zeros(2),
                                   confusion, stamped)]
    metrics, _ = results.chunk_frames(
        replicas=[0, 1], counts=[0, 5], seeds=[0, 0], paired=True,
        class_names=[str(k) for k in range(K)], history=history,
        backdoor=(TARGET, None))
    asr, robust, n = results.attack_success(stamped, target=TARGET)
    for r in range(2):
        rows = metrics[metrics["replica"] == r]
        assert (rows["asr"] == asr[r]).all()
        assert (rows["robust_accuracy"] == robust[r]).all()
        assert (rows["n_stamped"] == n[r]).all()
        np.testing.assert_array_equal(rows["stamped_to_target"],
                                      stamped[r][:, TARGET])
        np.testing.assert_array_equal(rows["stamped_correct"], np.diag(stamped[r]))
    plain, _ = results.chunk_frames(
        replicas=[0, 1], counts=[0, 5], seeds=[0, 0], paired=True,
        class_names=[str(k) for k in range(K)], history=history)
    assert "asr" not in plain.columns
