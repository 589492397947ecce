"""Per-replica training subsets in the engine, against physically smaller datasets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sweep import engine
from sweep.engine import simple_cnn
from tests.test_engine import assert_same_trajectory, replica

N, BATCH = 160, 32


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, N).astype(np.int32)
    test_x = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    test_y = rng.integers(0, 10, 40).astype(np.int32)
    return images, labels, test_x, test_y


@pytest.mark.slow
def test_subset_replica_equals_replica_trained_on_only_its_subset(tiny):
    """Two fold replicas in one vmapped chunk vs each alone on its own images."""
    images, labels, test_x, test_y = tiny
    rng = np.random.default_rng(1)
    m = 96  # equal-size subsets, different images, different per-replica labels
    index = np.stack([np.sort(rng.choice(N, m, replace=False)) for _ in range(2)])
    rep_labels = np.stack([labels, rng.integers(0, 10, N).astype(np.int32)])
    recipe = engine.Recipe(n_train=N, n_classes=10, batch_size=BATCH,
                           kernel="im2col", eval_batch_size=20)
    eng = engine.SubsetEngine(recipe, images, test_x, test_y)
    keys = engine.replica_keys(np.array([3, 4]), np.zeros(2))
    subsets = engine.Subsets(index.astype(np.int32), np.full(2, m, np.int32))
    together, history, _ = eng.train(rep_labels, keys, 2, subsets=subsets)
    for r in range(2):
        own = images[index[r]]
        alone_recipe = engine.Recipe(n_train=m, n_classes=10, batch_size=BATCH,
                                     kernel="im2col", eval_batch_size=20)
        alone_eng = engine.Engine(alone_recipe, own, test_x, test_y)
        own_keys = engine.ReplicaKeys(*(k[r : r + 1] for k in keys))
        own_labels = rep_labels[r, index[r]][None]
        alone, alone_history = alone_eng.train(own_labels, own_keys, 2)
        assert_same_trajectory(replica(together.params, r), replica(alone.params, 0),
                               simple_cnn.init(keys.init[r]), 1e-5)
        np.testing.assert_allclose(history[-1].train_loss[r],
                                   alone_history[-1].train_loss[0], rtol=1e-5)
        np.testing.assert_array_equal(history[-1].confusion[r],
                                      alone_history[-1].confusion[0])
    # The other replica's subset gives another model: the check can fail.
    own_keys = engine.ReplicaKeys(*(k[0:1] for k in keys))
    wrong, _ = engine.Engine(
        engine.Recipe(n_train=m, n_classes=10, batch_size=BATCH, kernel="im2col",
                      eval_batch_size=20), images[index[1]], test_x, test_y,
    ).train(rep_labels[0, index[1]][None], own_keys, 2)
    with pytest.raises(AssertionError):
        assert_same_trajectory(replica(together.params, 0), replica(wrong.params, 0),
                               simple_cnn.init(keys.init[0]), 1e-5)


def test_unequal_subsets_visit_each_own_image_once_per_epoch():
    keys = engine.replica_keys(np.array([0, 1, 2]), np.zeros(3))
    m = 100
    rng = np.random.default_rng(2)
    index = np.stack([rng.permutation(300)[:m] for _ in range(3)]).astype(np.int32)
    length = np.array([100, 77, 64], np.int32)
    idx, mask = engine.subset_batches(32, keys.shuffle, jnp.int32(1),
                                      engine.Subsets(index, length))
    assert idx.shape == (4, 3, 32) and mask.shape == (4, 3, 32)
    for r in range(3):
        seen = np.asarray(idx[:, r]).reshape(-1)[np.asarray(mask[:, r]).reshape(-1) > 0]
        np.testing.assert_array_equal(np.sort(seen), np.sort(index[r, : length[r]]))
        # Valid examples come first: only the tail batches hold padding.
        flat = np.asarray(mask[:, r]).reshape(-1)
        assert flat[: length[r]].all() and not flat[length[r]:].any()


@pytest.mark.slow
def test_margins_are_recorded_only_for_trained_images(tiny):
    images, labels, test_x, test_y = tiny
    recipe = engine.Recipe(n_train=N, n_classes=10, batch_size=BATCH,
                           eval_batch_size=20)
    eng = engine.SubsetEngine(recipe, images, test_x, test_y, record_margins=True)
    keys = engine.replica_keys(np.array([0, 1]), np.zeros(2))
    index = np.stack([np.arange(N), np.r_[np.arange(0, N, 2), np.zeros(N // 2)]])
    subsets = engine.Subsets(index.astype(np.int32), np.array([N, N // 2], np.int32))
    _, history, margin = eng.train(np.stack([labels, labels]), keys, 2,
                                   subsets=subsets)
    assert margin.shape == (2, N)
    assert np.all(margin[0] != 0)  # every image trained on, twice
    assert np.all(margin[1, 1::2] == 0) and np.all(margin[1, ::2] != 0)
    assert np.all(np.isfinite(history[-1].train_loss))


def test_margin_is_assigned_logit_minus_largest_other():
    logits = jnp.array([[2.0, 5.0, 1.0], [0.5, -1.0, 3.0]])
    np.testing.assert_allclose(engine.margins(logits, jnp.array([1, 0])), [3.0, -2.5])


@pytest.mark.slow
def test_predict_matches_apply_and_embed(tiny):
    images, labels, test_x, test_y = tiny
    recipe = engine.Recipe(n_train=N, n_classes=10, batch_size=BATCH,
                           eval_batch_size=64)
    eng = engine.SubsetEngine(recipe, images, test_x, test_y)
    params = jax.vmap(simple_cnn.init)(jax.random.split(jax.random.key(0), 2))
    logp, feats = eng.predict(params, images[:100])  # 100: padded to 128
    assert logp.shape == (2, 100, 10) and feats.shape == (2, 100, 512)
    x = simple_cnn.normalize(jnp.asarray(images[:100]))
    for r in range(2):
        p = replica(params, r)
        logits = simple_cnn.apply(p, x, layers=simple_cnn.single_layers())
        np.testing.assert_allclose(logp[r], jax.nn.log_softmax(logits), atol=1e-4)
        np.testing.assert_allclose(
            feats[r], simple_cnn.embed(p, x, layers=simple_cnn.single_layers()), atol=1e-4)
