"""The optimizer applied per replica: any optax transform keeps replicas apart."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sweep import engine, results
from sweep.engine import optim
from sweep.errors import SweepError
from sweep.experiment.config import Config
from sweep.experiment.running import checkpoints

CLIP = "clip_by_global_norm(0.05), adam"


def stacked_tree(r=3, seed=0):
    k = jax.random.split(jax.random.key(seed), 2)
    return {"w": jax.random.normal(k[0], (r, 40, 30)),
            "b": jax.random.normal(k[1], (r, 30))}


def one(tree, i):
    return jax.tree.map(lambda leaf: leaf[i], tree)


def test_per_replica_clipping_equals_each_replica_clipped_alone():
    # SGD, not Adam: Adam's first step is sign-like and would hide the scale.
    tx = optax.chain(optax.clip_by_global_norm(0.5), optax.sgd(0.1))
    params = stacked_tree()
    # Replica 1's gradients are 100x larger: a global norm over the stack would
    # be replica 1's and shrink the others' updates by ~100x.
    grads = jax.tree.map(lambda p: p * jnp.array([1.0, 100.0, 1.0]).reshape(
        (3,) + (1,) * (p.ndim - 1)), stacked_tree(seed=1))
    vx = optim.per_replica(tx)
    updates, _ = jax.jit(vx.update)(grads, vx.init(params), params)
    for r in range(3):
        mine = one(params, r)
        alone, _ = jax.jit(tx.update)(one(grads, r), tx.init(mine), mine)
        for a, b in zip(jax.tree.leaves(one(updates, r)), jax.tree.leaves(alone)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)
    # The bug this guards against: one update over the stacked parameters.
    mixed, _ = tx.update(grads, tx.init(params), params)
    ratio = float(jnp.abs(one(mixed, 0)["w"]).max()
                  / jnp.abs(one(updates, 0)["w"]).max())
    assert ratio < 0.1


def test_per_replica_adam_is_bitwise_the_stacked_update():
    """Adam is elementwise, so the per-replica update is the same computation; with
    the step count kept a shared scalar it compiles to the same bits."""
    tx = optim.build(None, 1e-3)
    vx = optim.per_replica(tx)
    params = stacked_tree()
    s1, s2 = tx.init(params), vx.init(params)
    assert jax.tree.structure(s1) == jax.tree.structure(s2)
    assert [np.shape(x) for x in jax.tree.leaves(s1)] == [
        np.shape(x) for x in jax.tree.leaves(s2)]  # checkpoints keep their layout
    for t in range(3):
        g = jax.tree.map(lambda p, t=t: jnp.sin(p * (t + 1)) * 1e-2, params)
        u1, s1 = jax.jit(tx.update)(g, s1, params)
        u2, s2 = jax.jit(vx.update)(g, s2, params)
        for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
            np.testing.assert_array_equal(a, b)


def test_a_scalar_that_differs_per_replica_gets_the_replica_axis():
    # apply_if_finite counts each replica's non-finite steps: not shareable.
    vx = optim.per_replica(optax.apply_if_finite(optax.adam(1e-3), 3))
    params = stacked_tree()
    state = vx.init(params)
    assert state.notfinite_count.shape == (3,)
    grads = jax.tree.map(lambda p: p.at[1].set(jnp.nan), params)
    _, state = jax.jit(vx.update)(grads, state, params)
    np.testing.assert_array_equal(state.notfinite_count, [0, 1, 0])


def test_spec_builds_the_optax_chain_and_fills_in_the_learning_rate():
    tx = optim.build("clip_by_global_norm(1.0), sgd(momentum=0.9)", lr=0.1)
    g = {"w": jnp.array([3.0, 4.0])}  # norm 5: clipped to norm 1
    updates, _ = tx.update(g, tx.init(g), g)
    np.testing.assert_allclose(updates["w"], [-0.06, -0.08], rtol=1e-6)
    explicit = optim.build("sgd(0.5)", lr=0.1)
    updates, _ = explicit.update(g, explicit.init(g))
    np.testing.assert_allclose(updates["w"], [-1.5, -2.0])


@pytest.mark.parametrize("spec, says", [
    ("adamm", "not an optax function"),
    ("adam(", "not a list of optax calls"),
    ("__import__('os')", "not an optax function"),
    ("adam(b1=x)", "x"),
    ("adam(nope=1)", "fails at adam"),
    ("safe_norm(1.0, 0.0)", "not a gradient transformation"),
])
def test_bad_specs_are_one_line_refusals(spec, says):
    with pytest.raises(SweepError, match=says):
        Config(optimizer=spec)


def test_fingerprint_changes_with_the_optimizer_only_when_set():
    base = Config()
    assert "optimizer" not in base.to_dict() or base.optimizer is None
    assert Config(optimizer=CLIP).fingerprint() != base.fingerprint()
    assert Config(optimizer="adam").fingerprint() != base.fingerprint()
    # Sweeps recorded before the field existed keep their fingerprint: the
    # default Config's, as the code before --optimizer (c650a30) computed it.
    assert base.fingerprint() == "c03065909b91"


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (128, 32, 32, 3), dtype=np.uint8)
    labels = np.stack([rng.integers(0, 10, 128) for _ in range(3)]).astype(np.int32)
    test_x = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    test_y = rng.integers(0, 10, 20).astype(np.int32)
    return images, labels, test_x, test_y


@pytest.mark.slow
def test_clipped_replica_in_a_chunk_equals_it_trained_alone(tiny):
    images, labels, test_x, test_y = tiny
    recipe = engine.Recipe(n_train=128, n_classes=10, batch_size=64, kernel="im2col",
                           eval_batch_size=20, optimizer=CLIP)
    eng = engine.Engine(recipe, images, test_x, test_y)
    keys = engine.replica_keys(np.array([3, 4, 5]), np.zeros(3))
    together, _ = eng.train(labels, keys, epochs=1)
    for r in range(3):
        own = engine.ReplicaKeys(*(k[r : r + 1] for k in keys))
        alone, _ = eng.train(labels[r : r + 1], own, epochs=1)
        init = jax.vmap(engine.simple_cnn.init)(own.init)
        travelled = np.sqrt(sum(np.sum((np.asarray(a) - np.asarray(b)) ** 2) for a, b in
                                zip(jax.tree.leaves(alone.params), jax.tree.leaves(init))))
        gap = np.sqrt(sum(np.sum((np.asarray(a[r]) - np.asarray(b[0])) ** 2) for a, b in
                          zip(jax.tree.leaves(together.params),
                              jax.tree.leaves(alone.params))))
        # Rounding only (see test_engine); mixing the clip over replicas moves
        # every step by a factor of the other replicas' norms.
        assert gap < 1e-5 * travelled, (r, gap, travelled)


@pytest.mark.slow
def test_checkpoint_of_a_per_replica_state_resumes_bitwise(tiny, tmp_path):
    images, labels, test_x, test_y = tiny
    spec = "apply_if_finite(chain(clip_by_global_norm(0.05), adam(0.001)), 3)"
    recipe = engine.Recipe(n_train=128, n_classes=10, batch_size=64, kernel="im2col",
                           eval_batch_size=20, optimizer=spec)
    eng = engine.Engine(recipe, images, test_x, test_y)
    keys = engine.replica_keys(np.array([3, 4, 5]), np.zeros(3))
    straight, _ = eng.train(labels, keys, epochs=2)
    state, history = eng.train(labels, keys, epochs=1)
    (tmp_path / results.CHUNKS).mkdir()
    leaves = jax.device_get(jax.tree.leaves(state))
    results.save_chunk_state(tmp_path, [0, 1, 2], 3, leaves, history)
    saved = results.load_chunk_states(tmp_path)[0]
    start = checkpoints.restore(eng, keys, saved)
    resumed, _ = eng.train(labels, keys, epochs=2, start=start)
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)
