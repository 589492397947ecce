"""sweep's engine step against PyTorch's on the same weights and batches (issue 21).

The fixture (tests/fixtures/torch_parity.npz, written by
scripts/make_torch_parity.py with torch 2.13 CPU) holds PyTorch's reference
SimpleCNN and torch.optim.Adam run for three steps on real images (batches of
8, 8 and a short 5) from weights both sides draw the same way; its docstring
says how each tensor maps between the layouts. Here the engine's own jitted
step (`sweep.engine.make_train_step`, one replica, dropout off) replays those
steps; torch is not imported.

Tolerances, float32 throughout. The two frameworks add the same products in
different orders (oneDNN / MKL against XLA's kernels), so each sum carries an
error of a few float32 ulps of its largest partial sums:
- loss: rtol 1e-5 (a mean of 8 log-softmaxes over 10 logits, each a sum of 512
  products);
- gradients at step 1: |got - want| <= 1e-4 x max|want| of that tensor, plus
  1e-6 x |want|: the kernel gradients are sums over up to 8 x 32 x 32 = 8,192
  pixel-products of mixed sign, so an entry near zero can differ by a few ulps
  of the largest terms rather than of itself;
- weights after the last step: at most 0.1% of the entries of a tensor more
  than 1e-6 (1e-3 x lr) apart, and none more than 5e-5 (5% of lr). Adam moves
  a weight by about lr x m / sqrt(v) per step whatever the gradient's size, so
  where a gradient is itself at its rounding noise (a few entries of the
  kernels: sums of thousands of products that nearly cancel) the two
  frameworks may move it differently, by up to lr x noise / (noise + eps);
  with torch 2.13 on a 2-core AMD EPYC: 2 of 18,432 conv2 entries past 1e-6,
  the largest 5.0e-6. A wrong update (bias correction, learning rate 1% off,
  the short batch averaged over 8) moves nearly every entry by more than 1e-6.
"""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sweep import engine

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "torch_parity.npz"
LAYERS = ("conv1", "conv2", "conv3", "fc1", "fc2")


def _maker():
    """scripts/make_torch_parity.py as a module (its init is the fixture's)."""
    spec = importlib.util.spec_from_file_location(
        "make_torch_parity", REPO / "scripts" / "make_torch_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def parity():
    """The fixture, and the engine's losses, step-1 gradients and final weights."""
    fx = dict(np.load(FIXTURE))
    maker = _maker()
    init = maker.init_weights()
    for name, a in init.items():
        assert maker.sha256(a) == str(fx[f"init_sha256_{name}"]), (
            f"initial {name} differs from the one the fixture was made from")

    steps, batch = fx["batch_index"].shape
    recipe = engine.Recipe(n_train=len(fx["labels"]), n_classes=10,
                           batch_size=batch, lr=float(fx["lr"]), dropout=0.0)
    params = {layer: {"w": jnp.asarray(init[f"{layer}_w"])[None],
                      "b": jnp.asarray(init[f"{layer}_b"])[None]}
              for layer in LAYERS}  # one replica: every leaf (1, ...)
    state = engine.TrainState(params, engine.optimizer(recipe).init(params),
                              jnp.zeros((), jnp.int32))
    step = jax.jit(engine.make_train_step(recipe))
    images = jnp.asarray(fx["images"])
    labels = jnp.asarray(fx["labels"])[None]  # (1, N)
    keys = engine.replica_keys(np.zeros(1), np.zeros(1))
    losses, grads = [], None
    for s in range(steps):
        n = int(fx["batch_size"][s])
        idx = jnp.asarray(fx["batch_index"][s])[None]  # (1, B), padding at the end
        mask = (jnp.arange(batch) < n).astype(jnp.float32)  # (B,)
        state, (loss_sum, _) = step(state, images, labels, keys.dropout, idx, mask)
        losses.append(float(loss_sum[0]) / n)
        if s == 0:
            # Adam's first moment after one step is (1 - b1) x the gradient.
            mu = state.opt_state[0].mu
            grads = jax.tree.map(lambda m: np.asarray(m[0]) / np.float32(0.1), mu)
    final = jax.tree.map(lambda p: np.asarray(p[0]), state.params)
    return fx, np.asarray(losses), grads, final


def _pairs(fx, tree, prefix):
    units = int(fx["fc1_units"])
    for layer in LAYERS:
        for kind in ("w", "b"):
            got = tree[layer][kind]
            if (layer, kind) == ("fc1", "w"):
                got = got[:, :units]  # the fixture keeps fc1's first units
            yield f"{layer}_{kind}", got, fx[f"{prefix}_{layer}_{kind}"]


def test_losses_match_torch(parity):
    fx, losses, _, _ = parity
    np.testing.assert_allclose(losses, fx["loss"], rtol=1e-5)


def test_step_one_gradients_match_torch(parity):
    fx, _, grads, _ = parity
    for name, got, want in _pairs(fx, grads, "grad"):
        assert got.shape == want.shape, name
        bound = 1e-4 * np.abs(want).max() + 1e-6 * np.abs(want)
        worst = np.abs(got - want).max() / np.abs(want).max()
        assert (np.abs(got - want) <= bound).all(), (
            f"{name}: largest difference {worst:.1e} of max|grad|")


def test_weights_after_adam_steps_match_torch(parity):
    fx, _, _, final = parity
    for name, got, want in _pairs(fx, final, "final"):
        assert got.shape == want.shape, name
        diff = np.abs(got - want)
        beyond = int((diff > 1e-6).sum())
        assert beyond <= 1e-3 * diff.size and diff.max() <= 5e-5, (
            f"{name}: {beyond} of {diff.size} entries differ by more than 1e-6, "
            f"the largest by {diff.max():.1e}")


def test_fixture_maps_torch_layouts_consistently():
    # The layout maps are inverses, and fc1's rows follow NHWC flattening:
    # sweep row (h*4 + w)*128 + c is PyTorch column c*16 + h*4 + w.
    maker = _maker()
    rng = np.random.default_rng(0)
    for name, shape in (("conv2_w", (3, 3, 32, 64)), ("fc1_w", (2048, 512)),
                        ("fc2_w", (512, 10))):
        a = rng.standard_normal(shape).astype(np.float32)
        back = maker.from_torch(name, maker.to_torch(name, a))
        np.testing.assert_array_equal(back, a)
    fc1 = rng.standard_normal((2048, 512)).astype(np.float32)
    t = maker.to_torch("fc1_w", fc1)
    h, w, c, o = 2, 3, 77, 5
    assert t[o, c * 16 + h * 4 + w] == fc1[(h * 4 + w) * 128 + c, o]
