"""Transfer heads as engine replicas, against Keras training the same heads."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sweep import engine
from sweep.engine import transfer_head

N, D, BATCH, R = 45, 12, 10, 3  # 45: the last batch of each epoch is short (5)


@pytest.fixture(scope="module")
def keras():
    from sweep.experiment.transfer import backbones

    os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is first imported
    pytest.importorskip("keras")

    return backbones.import_keras()


def features_and_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    labels = rng.integers(0, 2, (R, N)).astype(np.int32)  # a labelling per replica
    test_x = rng.normal(size=(7, D)).astype(np.float32)
    test_y = rng.integers(0, 2, 7).astype(np.int32)
    return x, labels, test_x, test_y


def keras_head(keras, params):
    """The recipe's top model in Keras, starting from the engine's weights."""
    m = keras.Sequential([
        keras.Input((D,)),
        keras.layers.Flatten(),
        keras.layers.Dense(transfer_head.HIDDEN, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])
    m.set_weights([np.asarray(params[k][p]) for k in ("fc1", "fc2") for p in "wb"])
    m.compile(optimizer=keras.optimizers.RMSprop(), loss="binary_crossentropy")
    return m


@pytest.fixture(autouse=True)
def keras_broadcasts():
    # Keras adds biases by rank promotion; the engine's code stays under "raise".
    with jax.numpy_rank_promotion("allow"):
        yield


@pytest.mark.slow
def test_head_in_engine_matches_keras_fit(keras):
    x, labels, test_x, test_y = features_and_labels()
    epochs = 3
    recipe = engine.Recipe(n_train=N, n_classes=2, batch_size=BATCH, lr=1e-3,
                           dropout=0.0, eval_batch_size=7)
    eng = engine.Engine(recipe, x, test_x, test_y, spec=transfer_head.spec(D))
    keys = engine.replica_keys(np.array([3, 4, 5]), np.zeros(R))
    init = eng.init(keys).params
    state, history = eng.train(labels, keys, epochs)
    for r in range(R):
        m = keras_head(keras, jax.tree.map(lambda a: a[r], init))
        for epoch in range(epochs):
            idx, _ = engine.epoch_batches(recipe, keys.shuffle, jnp.int32(epoch))
            order = np.asarray(idx)[:, r, :].reshape(-1)[:N]  # the engine's batches
            m.fit(x[order], labels[r, order], batch_size=BATCH, epochs=1,
                  shuffle=False, verbose=0)
        got = [np.asarray(state.params[k][p][r]) for k in ("fc1", "fc2") for p in "wb"]
        theirs_all = [np.asarray(v.value) for v in m.weights]  # get_weights warns
        for mine, theirs in zip(got, theirs_all, strict=True):
            np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=2e-6)
        # Test predictions and the confusion from the sigmoid output agree too.
        pred = (m.predict(test_x, verbose=0)[:, 0] > 0.5).astype(int)
        confusion = np.zeros((2, 2), int)
        np.add.at(confusion, (test_y, pred), 1)
        np.testing.assert_array_equal(history[-1].confusion[r], confusion)


def test_rmsprop_matches_keras_step_by_step(keras):
    rng = np.random.default_rng(2)
    w = rng.normal(size=(5, 3)).astype(np.float32)
    grads = [rng.normal(size=(5, 3)).astype(np.float32) * s for s in (1, 1e-3, 10)]
    tx = transfer_head.rmsprop(1e-3)
    mine, state = jnp.asarray(w), transfer_head.rmsprop(1e-3).init(jnp.asarray(w))
    var = keras.Variable(w)
    opt = keras.optimizers.RMSprop()
    opt.build([var])
    for g in grads:
        updates, state = tx.update(jnp.asarray(g), state)
        mine = mine + updates
        opt.apply([keras.ops.convert_to_tensor(g)], [var])
        np.testing.assert_allclose(np.asarray(mine), np.asarray(var.value),
                                   rtol=1e-6, atol=1e-9)


def test_binary_cross_entropy_is_keras(keras):
    logits = jnp.asarray([[-30.0], [-2.0], [0.0], [1.5], [40.0]])
    y = jnp.asarray([1, 0, 1, 1, 0])
    theirs = keras.losses.binary_crossentropy(
        np.asarray(y, np.float32)[:, None], np.asarray(jax.nn.sigmoid(logits))
    )
    np.testing.assert_allclose(transfer_head.binary_cross_entropy(logits, y),
                               np.asarray(theirs), rtol=1e-5)


@pytest.mark.slow
def test_head_replica_with_dropout_equals_head_alone():
    """Batched heads, dropout on, equal each head's own unbatched step."""
    x, labels, _, _ = features_and_labels()
    spec = transfer_head.spec(D)
    keys = jax.random.split(jax.random.key(0), R)
    params = jax.vmap(spec.init)(keys)
    drop = jax.random.split(jax.random.key(1), R)
    xb = jnp.broadcast_to(jnp.asarray(x[:BATCH]), (R, BATCH, D))
    y = jnp.asarray(labels[:, :BATCH])
    apply = spec.make_apply(None)

    def batched_loss(p):
        logits = apply(p, xb, dropout=0.5, dropout_key=drop)
        return spec.loss(logits, y).mean(-1).sum()

    grads = jax.grad(batched_loss)(params)
    for r in range(R):
        def loss(p):
            logits = transfer_head.apply(p, xb[r], dropout=0.5, dropout_key=drop[r])
            return transfer_head.binary_cross_entropy(logits, y[r]).mean()

        alone = jax.grad(loss)(jax.tree.map(lambda a: a[r], params))
        for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(grads), strict=True):
            np.testing.assert_allclose(a, b[r], rtol=1e-6, atol=1e-8)


def test_head_init_is_keras_glorot_uniform():
    p = transfer_head.init(jax.random.key(0), 2048)
    limit = np.sqrt(6 / (2048 + 256))
    w = np.asarray(p["fc1"]["w"])
    assert w.shape == (2048, 256) and np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.99 * limit  # uniform over the whole range
    assert not np.asarray(p["fc1"]["b"]).any() and not np.asarray(p["fc2"]["b"]).any()
