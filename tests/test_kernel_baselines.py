"""The bench's baseline formulations (bench/kernel_baselines.py) against the
same plain references the hot-path kernels are held to: a baseline that
computed something else would make the bench compare unlike things."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bench import kernel_baselines as baselines
from kernels import conv, dense, pool
from tests.test_kernels import (
    CONV_SHAPES,
    DENSE_SHAPES,
    F32,
    POOL_SHAPES,
    _assert_close,
    _conv_args,
    _conv_reference,
    _normal,
    _weighted_grads,
)

# "shared" assumes every replica's input is the same: tested apart, below.
GENERAL_CONV_IMPLS = tuple(i for i in baselines.CONV_IMPLS if i != "shared")


@pytest.mark.parametrize("shape", CONV_SHAPES[:2], ids=str)
@pytest.mark.parametrize("impl", GENERAL_CONV_IMPLS)
def test_conv_baseline_matches_reference(impl, shape):
    args = _conv_args(shape)
    fn = jax.jit(lambda x, w, b: baselines.conv3x3(x, w, b, impl=impl))
    want, want_grads = _conv_reference(shape)
    _assert_close(fn(*args), want, F32)
    _assert_close(_weighted_grads(fn, args), want_grads, F32)


@pytest.mark.parametrize("shape", CONV_SHAPES[:2], ids=str)
def test_shared_input_conv_matches_reference(shape):
    # Every replica sees replica 0's input (evaluation; a first layer fed one
    # batch): outputs and the kernel and bias gradients must match.
    x, w, b = _conv_args(shape)
    x = jnp.broadcast_to(x[:1], x.shape)
    ref = jax.jit(conv.conv3x3_reference)
    fn = jax.jit(lambda x, w, b: baselines.conv3x3(x, w, b, impl="shared"))
    _assert_close(fn(x, w, b), ref(x, w, b), F32)

    def grads(f):
        return _weighted_grads(lambda w, b: f(x, w, b), (w, b))

    _assert_close(grads(fn), grads(ref), F32)


@pytest.mark.parametrize("shape", POOL_SHAPES, ids=str)
def test_window_pool_matches_reference(shape):
    x = _normal(4, shape)
    fn = jax.jit(lambda x: baselines.maxpool2(x, impl="window"))
    ref = jax.jit(pool.maxpool2_reference)
    _assert_close(fn(x), ref(x), {"rtol": 0, "atol": 0})
    _assert_close(_weighted_grads(fn, (x,)), _weighted_grads(ref, (x,)), F32)


def test_pool_ties_conserve_gradient():
    # A window of equal values (as after a ReLU clamps it to 0): "reshape" splits
    # the gradient equally, "window" gives it to one element (as PyTorch does);
    # both pass on exactly the gradient that arrived.
    x = jnp.zeros((1, 1, 2, 2, 1))
    g = {
        impl: jax.grad(
            lambda x, impl=impl: 4.0 * baselines.maxpool2(x, impl=impl).sum()
        )(x)
        for impl in ("reshape", "window")
    }
    np.testing.assert_allclose(np.asarray(g["reshape"]).ravel(), [1.0, 1.0, 1.0, 1.0])
    assert sorted(np.asarray(g["window"]).ravel().tolist()) == [0.0, 0.0, 0.0, 4.0]


@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=str)
def test_vmap_dense_matches_reference(shape):
    r, b, i, o = shape
    args = (
        _normal(5, (r, b, i)),
        _normal(6, (r, i, o), 1 / np.sqrt(i)),
        _normal(7, (r, o)),
    )
    fn = jax.jit(lambda x, w, b: baselines.dense(x, w, b, impl="vmap"))
    ref = jax.jit(dense.dense_reference)
    _assert_close(fn(*args), ref(*args), F32)
    _assert_close(_weighted_grads(fn, args), _weighted_grads(ref, args), F32)


def test_baselines_are_not_in_the_hot_path_modules():
    assert not set(baselines.CONV_IMPLS) & set(conv.IMPLS)
    assert not set(baselines.POOL_IMPLS) & set(pool.IMPLS)
    assert not set(baselines.DENSE_IMPLS) & set(dense.IMPLS)
