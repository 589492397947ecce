"""What a sweep will cost here, before it starts: replicas per step and time.

Both are rough by design: the replica count leaves generous headroom (an
out-of-memory chunk is retried smaller anyway, see `sweep.chunking`), and the
time is only measured when a cheap bound says it may be hours.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sweep.pipeline import Prepared

# Rough training cost of one image through SimpleCNN: forward + backward ~ 3x the
# 11.4M multiply-adds of the forward pass, 2 FLOPs each.
TRAIN_FLOPS_PER_IMAGE = 3 * 2 * 11_375_616
# Bytes one replica needs on the device per training image of a batch, and fixed
# (parameters, gradients, two Adam moments), measured loosely and rounded up.
BYTES_PER_REPLICA_IMAGE = 1_200_000
BYTES_PER_REPLICA_FIXED = 4 * 4 * 1_147_466


def head_bytes(eval_batch_size: int, n_features: int) -> int:
    """Device bytes one transfer head needs: parameters with gradients and
    optimizer state, and its evaluation batch of features and hidden units."""
    from sweep import head

    params = n_features * head.HIDDEN + 2 * head.HIDDEN + 2
    return 4 * (4 * params + 2 * eval_batch_size * (n_features + 2 * head.HIDDEN))


def auto_replicas_per_step(batch_size: int, eval_batch_size: int,
                           per_replica: int | None = None) -> int:
    """How many replicas fit the device at once, leaving generous headroom.

    `per_replica` overrides SimpleCNN's bytes per replica (a head's are far fewer).
    """
    import jax

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


def warn_if_slow(p: Prepared, engine, n_replicas: int, size: int, *, log,
                 parallel: int = 1, where: str | None = None) -> None:
    """Warn before training when the sweep will take hours here, with an estimate.

    A cheap bound first (the FLOPs at an optimistic rate for the backend); only
    when that bound is near an hour is a real single-replica step timed, which
    costs a small compile. Batching makes R replicas cost at most about R single
    steps, so on accelerators the estimate is an upper bound. `parallel` devices
    or workers (`where` names them) each take an even share of the replicas,
    each assumed as fast as the device timed here.
    """
    import jax

    from sweep import engine as engine_lib

    c = p.config
    if c.model == "head":  # the FLOP model below is SimpleCNN's
        return
    images = n_replicas * len(p.train_labels) * c.epochs / parallel
    optimistic = {"cpu": 1e11 * (os.cpu_count() or 1)}.get(jax.default_backend(), 4e14)
    if images * TRAIN_FLOPS_PER_IMAGE / optimistic < 1800:
        return
    seconds_per_step = engine_lib.time_single_step(engine.recipe, engine.train_images)
    steps = engine.recipe.steps_per_epoch * c.epochs
    estimate = seconds_per_step * steps * -(-n_replicas // parallel)
    if estimate > 3600:
        bound = "" if jax.default_backend() == "cpu" else "at most "
        here = where or f"this {jax.default_backend()} device"
        log(
            f"warning: this sweep ({n_replicas} replicas x {c.epochs} epochs x "
            f"{len(p.train_labels):,} images) will take {bound}about "
            f"{estimate / 3600:.1f} hours on {here} "
            f"({seconds_per_step * 1e3:.0f} ms per single-replica step); "
            "try --train-size, fewer --seeds/--counts, or a GPU"
        )
