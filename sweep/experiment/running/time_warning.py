"""Before a sweep that would take hours here: say so, with an estimate.

The estimate is only measured when a cheap bound says it may be hours: a FLOP
count at an optimistic rate first, then one timed single-replica step.
"""

from __future__ import annotations

import os

import jax

from sweep import engine as engine_lib
from sweep.experiment.prepare import Prepared

# Rough training cost of one image through SimpleCNN: forward + backward ~ 3x the
# 11.4M multiply-adds of the forward pass, 2 FLOPs each.
TRAIN_FLOPS_PER_IMAGE = 3 * 2 * 11_375_616


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
