"""The engine against the same model trained one replica at a time."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sweep import engine
from sweep.engine import simple_cnn

N_TRAIN, BATCH, R = 192, 64, 3


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N_TRAIN, 32, 32, 3), dtype=np.uint8)
    labels = np.stack([rng.integers(0, 10, N_TRAIN) for _ in range(R)]).astype(np.int32)
    test_x = rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    test_y = rng.integers(0, 10, 50).astype(np.int32)
    return images, labels, test_x, test_y


def train_alone(recipe, images, labels, init_key, shuffle_key, dropout_key, epochs):
    """One replica, the plain way: Python loops, unbatched layers, real short batches."""
    layers = simple_cnn.single_layers()
    tx = optax.adam(recipe.lr)
    params = simple_cnn.init(init_key)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y, key):
        def loss_fn(p):
            logits = simple_cnn.apply(p, x, layers=layers, dropout=recipe.dropout,
                                 dropout_key=key)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    n, step_count = len(labels), 0
    for epoch in range(epochs):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n))
        for start in range(0, n, recipe.batch_size):
            idx = perm[start : start + recipe.batch_size]
            x = simple_cnn.normalize(jnp.asarray(images[idx]))
            key = jax.random.fold_in(dropout_key, step_count)
            params, opt_state = step(params, opt_state, x, jnp.asarray(labels[idx]), key)
            step_count += 1
    return params


def distance(a, b) -> float:
    return float(np.sqrt(sum(
        np.sum((np.asarray(x) - np.asarray(y)) ** 2)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )))


def assert_same_trajectory(mine, alone, init, rel):
    """`mine` ends where `alone` does, relative to how far training moved them."""
    travelled = distance(alone, init)
    assert distance(mine, alone) < rel * travelled, (distance(mine, alone), travelled)


def replica(tree, r):
    return jax.tree.map(lambda leaf: leaf[r], tree)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["im2col", "vmap"])
def test_replica_in_sweep_equals_replica_trained_alone(tiny, kernel):
    images, labels, test_x, test_y = tiny
    recipe = engine.Recipe(n_train=N_TRAIN, n_classes=10, batch_size=BATCH,
                           kernel=kernel, eval_batch_size=25)
    eng = engine.Engine(recipe, images, test_x, test_y)
    # Three seeds, so each replica has its own init, order, dropout and labels.
    keys = engine.replica_keys(np.array([3, 4, 5]), np.zeros(R))
    epochs = 2 if kernel == "im2col" else 1  # grouped convs are slow on CPU
    together, history = eng.train(labels, keys, epochs=epochs)
    for r in range(R):
        own_keys = engine.ReplicaKeys(*(k[r : r + 1] for k in keys))
        alone, alone_history = eng.train(labels[r : r + 1], own_keys, epochs=epochs)
        mine, lone = replica(together.params, r), replica(alone.params, 0)
        if kernel == "im2col" and jax.default_backend() == "cpu":
            # A batched matmul per replica, compiled under kernels/invariance.py:
            # the same bits whatever the chunk (tests/test_chunk_invariance.py).
            for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(lone)):
                np.testing.assert_array_equal(a, b)
            assert history[-1].train_loss[r] == alone_history[-1].train_loss[0]
        elif kernel == "im2col":
            # Elsewhere the replica axis may change which SIMD path XLA picks, so
            # float32 rounding may differ (Adam can blow a rounding-level
            # gradient up to one lr-sized step on a near-zero-gradient weight,
            # hence a distance, not allclose).
            assert_same_trajectory(mine, lone, simple_cnn.init(keys.init[r]), 1e-5)
        else:
            # Grouped convolutions sum in another order as R changes, and Adam
            # turns near-zero gradients' rounding into whole steps for a few
            # weights; the trajectory must still be the same one.
            assert_same_trajectory(mine, lone, simple_cnn.init(keys.init[r]), 1e-3)
        np.testing.assert_allclose(history[-1].train_loss[r],
                                   alone_history[-1].train_loss[0], rtol=1e-5)
        np.testing.assert_array_equal(history[-1].confusion[r],
                                      alone_history[-1].confusion[0])


@pytest.mark.parametrize("kernel", ["im2col", "vmap"])
def test_batched_gradients_equal_the_plain_single_model(kernel):
    """One step's loss and gradients, dropout included, against unbatched layers."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.uniform(-1, 1, (2, 8, 32, 32, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, (2, 8)))
    params = jax.vmap(simple_cnn.init)(jax.random.split(jax.random.key(0), 2))
    drop = jax.random.split(jax.random.key(1), 2)
    batched = simple_cnn.batched_layers(kernel)

    def loss_batched(p):
        logits = simple_cnn.apply(p, x, layers=batched, dropout=0.5, dropout_key=drop)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(-1).sum()

    grads = jax.grad(loss_batched)(params)
    for r in range(2):
        def loss_single(p):
            logits = simple_cnn.apply(p, x[r], layers=simple_cnn.single_layers(), dropout=0.5,
                                 dropout_key=drop[r])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y[r]).mean()

        expected = jax.grad(loss_single)(replica(params, r))
        for a, b in zip(jax.tree.leaves(replica(grads, r)), jax.tree.leaves(expected)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_engine_follows_the_plain_training_loop(tiny):
    """Against an independent trainer: Python loops, plain layers, real short batch.

    Float reassociation between the two conv formulations is amplified by Adam
    (sign-like steps where gradients are near zero) to ~1.5% of the distance
    travelled over these steps; a wrong batch, label or key gives ~100%.
    """
    images, labels, test_x, test_y = tiny
    n = 150  # batches of 64, 64 and a short 22
    recipe = engine.Recipe(n_train=n, n_classes=10, batch_size=BATCH, eval_batch_size=25)
    eng = engine.Engine(recipe, images[:n], test_x, test_y)
    keys = engine.replica_keys(np.array([7, 8]), np.zeros(2))
    state, _ = eng.train(labels[:2, :n], keys, epochs=2)
    for r in range(2):
        alone = train_alone(recipe, images[:n], labels[r, :n], keys.init[r],
                            keys.shuffle[r], keys.dropout[r], epochs=2)
        init = simple_cnn.init(keys.init[r])
        assert_same_trajectory(replica(state.params, r), alone, init, 0.05)
        other = replica(state.params, 1 - r)  # same check on the other replica fails
        assert distance(other, alone) > 0.5 * distance(alone, init)


@pytest.mark.slow
def test_metrics_are_consistent_with_a_direct_evaluation(tiny):
    images, labels, test_x, test_y = tiny
    recipe = engine.Recipe(n_train=N_TRAIN, n_classes=10, batch_size=BATCH,
                           eval_batch_size=20)  # 50 test images: padded to 60
    eng = engine.Engine(recipe, images, test_x, test_y)
    keys = engine.replica_keys(np.array([0, 1, 2]), np.zeros(R))
    state, history = eng.train(labels, keys, epochs=1)
    m = history[0]
    assert m.confusion.shape == (R, 10, 10)
    np.testing.assert_array_equal(m.confusion.sum((1, 2)), [50] * R)
    np.testing.assert_array_equal(m.confusion.sum(2)[0], np.bincount(test_y, minlength=10))
    for r in range(R):
        p = jax.tree.map(lambda x: x[r], state.params)
        logits = simple_cnn.apply(p, simple_cnn.normalize(jnp.asarray(test_x)),
                             layers=simple_cnn.single_layers())
        pred = np.asarray(logits.argmax(-1))
        expected = np.zeros((10, 10), int)
        np.add.at(expected, (test_y, pred), 1)
        np.testing.assert_array_equal(m.confusion[r], expected)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, test_y).mean()
        np.testing.assert_allclose(m.test_loss[r], ce, rtol=1e-4)
    assert np.all((m.train_accuracy >= 0) & (m.train_accuracy <= 100))
    assert np.all(np.isfinite(m.train_loss))


def test_twins_share_init_order_and_dropout_keys():
    keys = engine.replica_keys(np.array([5, 5, 6]), np.array([0, 0, 0]))
    for k in keys:
        assert jnp.array_equal(jax.random.key_data(k[0]), jax.random.key_data(k[1]))
        assert not jnp.array_equal(jax.random.key_data(k[0]), jax.random.key_data(k[2]))
    recipe = engine.Recipe(n_train=300, n_classes=10)
    state = engine.init_state(recipe, keys.init)
    for leaf in jax.tree.leaves(state.params):
        np.testing.assert_array_equal(leaf[0], leaf[1])
        assert not np.array_equal(leaf[0], leaf[2])
    idx, _ = engine.epoch_batches(recipe, keys.shuffle, jnp.int32(0))
    np.testing.assert_array_equal(idx[:, 0], idx[:, 1])
    assert not np.array_equal(idx[:, 0], idx[:, 2])
    # Unpaired replicas of one seed get their own streams, so nothing is shared.
    unpaired = engine.replica_keys(np.array([5, 5]), np.array([1, 2]))
    assert not jnp.array_equal(jax.random.key_data(unpaired.init[0]),
                               jax.random.key_data(unpaired.init[1]))


def test_epoch_covers_every_image_once_per_replica():
    recipe = engine.Recipe(n_train=300, n_classes=10, batch_size=64)
    keys = engine.replica_keys(np.array([0, 1]), np.zeros(2))
    idx, mask = engine.epoch_batches(recipe, keys.shuffle, jnp.int32(3))
    assert idx.shape == (5, 2, 64) and mask.shape == (5, 64)
    assert float(mask.sum()) == 300
    for r in range(2):
        seen = np.asarray(idx[:, r]).reshape(-1)[np.asarray(mask).reshape(-1) > 0]
        np.testing.assert_array_equal(np.sort(seen), np.arange(300))


def test_parameter_count_is_the_reference_models():
    params = simple_cnn.init(jax.random.key(0))
    assert sum(x.size for x in jax.tree.leaves(params)) == simple_cnn.N_PARAMS == 1_147_466
    shapes = {k: v["w"].shape for k, v in params.items()}
    assert shapes["fc1"] == (2048, 512) and shapes["fc2"] == (512, 10)


def _fan_in(shape) -> int:
    # PyTorch's fan_in: input channels x kernel area (HWIO here), or in_features.
    return int(np.prod(shape[:-1]))


def test_pytorch_default_init_distribution():
    """kaiming_uniform_(a=sqrt(5)) weights and U(+-1/sqrt(fan_in)) biases, per layer.

    The weight bound is derived here as PyTorch derives it (gain sqrt(2/(1+a^2)),
    bound sqrt(3) * gain / sqrt(fan_in)); every leaf must fill [-bound, bound]
    uniformly (Kolmogorov-Smirnov against that uniform, and its variance
    bound^2/3), and no two leaves may share a draw.
    """
    from scipy import stats

    params = simple_cnn.init(jax.random.key(1))
    assert [name for name, _, _ in simple_cnn.LAYOUT] == list(params)
    gain = np.sqrt(2.0 / (1 + 5.0))
    seen = []
    for name, leaves in params.items():
        fan_in = _fan_in(leaves["w"].shape)
        for kind, leaf in leaves.items():
            x = np.asarray(leaf, np.float64).ravel()
            bound = (np.sqrt(3.0) * gain if kind == "w" else 1.0) / np.sqrt(fan_in)
            assert np.abs(x).max() <= bound * (1 + 1e-6), (name, kind)
            if x.size < 100:  # fc2's 10 biases: the bound is all that is testable
                continue
            assert np.abs(x).max() > 0.95 * bound, (name, kind)  # fills the range
            ks = stats.kstest(x, stats.uniform(-bound, 2 * bound).cdf)
            assert ks.pvalue > 1e-3, (name, kind, ks)
            # Variance of U(-b, b) is b^2/3; its sampling sd is ~0.9/sqrt(n) of it.
            assert abs(x.var() / (bound**2 / 3) - 1) < 6 / np.sqrt(x.size), (name, kind)
            assert abs(x.mean()) < 6 * bound / np.sqrt(3 * x.size), (name, kind)
            seen.append(x[:32])
    for i in range(len(seen)):  # independent keys per leaf
        for j in range(i):
            assert not np.allclose(seen[i] / np.abs(seen[i]).max(),
                                   seen[j] / np.abs(seen[j]).max())


def test_dropout_keeps_with_probability_one_minus_rate_and_scales_survivors():
    """torch's inverted dropout, against an independent draw and in distribution."""
    x = jnp.asarray(np.random.default_rng(0).uniform(0.5, 2.0, (64, 512)), jnp.float32)
    key = jax.random.key(11)
    for rate in (0.2, 0.5):
        y = np.asarray(simple_cnn.single_layers().dropout(x, rate, key))
        # Independent: keep where a uniform draw from the same key is below
        # 1 - rate (what a Bernoulli(1 - rate) is), survivors divided by 1 - rate.
        keep = np.asarray(jax.random.uniform(key, x.shape)) < 1 - rate
        np.testing.assert_array_equal(y != 0, keep)
        # (XLA may divide by multiplying with the reciprocal: an ulp apart.)
        np.testing.assert_allclose(y[keep], np.asarray(x)[keep] / (1 - rate), rtol=3e-7)
        # In distribution: the dropped fraction is the rate, the mean is kept.
        dropped = float((y == 0).mean())
        assert abs(dropped - rate) < 4 * np.sqrt(rate * (1 - rate) / y.size)
        np.testing.assert_allclose(y.mean(), float(x.mean()), rtol=0.02)
    # Batched: each replica its own key, the same as the single-replica layer.
    xs, keys = jnp.stack([x, x]), jax.random.split(key, 2)
    ys = simple_cnn.batched_layers().dropout(xs, 0.5, keys)
    for r in range(2):
        np.testing.assert_array_equal(ys[r], simple_cnn.single_layers().dropout(x, 0.5, keys[r]))
    assert not np.array_equal(ys[0], ys[1])


@pytest.mark.slow
def test_second_epoch_and_second_chunk_do_not_recompile(tiny):
    images, labels, test_x, test_y = tiny
    recipe = engine.Recipe(n_train=N_TRAIN, n_classes=10, batch_size=BATCH,
                           eval_batch_size=25)
    eng = engine.Engine(recipe, images, test_x, test_y)
    keys = engine.replica_keys(np.array([0, 1, 2]), np.zeros(R))
    eng.train(labels, keys, epochs=2)
    eng.train(labels[::-1].copy(), engine.replica_keys(np.array([7, 8, 9]), np.zeros(R)), 1)
    assert eng.train_epoch._cache_size() == 1
    assert eng.evaluate._cache_size() == 1
