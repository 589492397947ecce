"""How many replicas fit the device at once: device memory per replica.

Rough by design, with generous headroom: an out-of-memory chunk is retried
smaller anyway (see `sweep.experiment.train_local`).
"""

from __future__ import annotations

import os

import jax

from sweep.engine import transfer_head

# Bytes one replica needs on the device per training image of a batch, and fixed
# (parameters, gradients, two Adam moments), measured loosely and rounded up.
BYTES_PER_REPLICA_IMAGE = 1_200_000
BYTES_PER_REPLICA_FIXED = 4 * 4 * 1_147_466


def head_bytes(eval_batch_size: int, n_features: int) -> int:
    """Device bytes one transfer head needs: parameters with gradients and
    optimizer state, and its evaluation batch of features and hidden units."""
    hidden = transfer_head.HIDDEN
    params = n_features * hidden + 2 * hidden + 2
    return 4 * (4 * params + 2 * eval_batch_size * (n_features + 2 * hidden))


def auto_replicas_per_step(batch_size: int, eval_batch_size: int,
                           per_replica: int | None = None) -> int:
    """How many replicas fit the device at once, leaving generous headroom.

    `per_replica` overrides SimpleCNN's bytes per replica (a head's are far fewer).
    """
    dev = jax.devices()[0]
    limit = None
    try:
        stats = dev.memory_stats() or {}
        limit = stats.get("bytes_limit")
    except Exception:  # memory_stats is unimplemented on some backends
        pass
    if not limit:
        limit = _host_memory_bytes()
    if per_replica is None:
        per_replica = BYTES_PER_REPLICA_FIXED + BYTES_PER_REPLICA_IMAGE * max(
            batch_size, eval_batch_size // 2
        )
    return max(1, int(0.6 * limit // per_replica))


def _host_memory_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
