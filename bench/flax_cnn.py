"""SimpleCNN written the plain `flax.linen` way: the benches' context baseline.

The same layers as `sweep.engine.simple_cnn` (conv 32/64/128 + ReLU + max pool, dense 512,
dropout, dense 10) with Flax's own initialisers; only for timing beside it.
"""

from __future__ import annotations


def simple_cnn(*, dropout: float = 0.5, classes: int = 10):
    """A `flax.linen.Module` instance; call with `train=` and a dropout rng."""
    import flax.linen as nn

    class SimpleCNN(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = True):
            for features in (32, 64, 128):
                x = nn.Conv(features, (3, 3), padding=1)(x)
                x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2))
            x = x.reshape(x.shape[0], -1)
            x = nn.relu(nn.Dense(512)(x))
            x = nn.Dropout(dropout, deterministic=not train)(x)
            return nn.Dense(classes)(x)

    return SimpleCNN()
