"""Mid-chunk checkpoints: a killed sweep continues a chunk where it stopped.

Between epochs, at most every `every_s()` seconds, a chunk's training state
(weights, Adam moments, the epochs so far) is saved beside its results (see
`sweep.results.save_chunk_state`); `restore` turns such a file back into what
`Engine.train(start=...)` continues from. Data order and dropout depend only on
the keys, the epoch and the step count, so a continued chunk computes exactly
what an unbroken one does.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import jax

from sweep import engine as engine_lib
from sweep import results


def every_s() -> float:
    """Seconds between mid-chunk checkpoints; a state copy costs ~14 MB a replica,
    so chunks whose epochs take seconds (accelerators) never write one."""
    return float(os.environ.get("SWEEP_CHECKPOINT_S", "60"))


def restore(engine: engine_lib.Engine, keys: engine_lib.ReplicaKeys, saved: dict):
    """`(state, history)` from a checkpoint of `results.load_chunk_states`."""
    treedef = jax.tree.structure(jax.eval_shape(engine.init_state, keys.init))
    state = engine.place(jax.tree.unflatten(treedef, list(saved["leaves"])),
                         int(saved["padded"]))
    h = saved["history"]
    history = [engine_lib.EpochMetrics(**{k: h[k][e] for k in h})
               for e in range(len(h["test_loss"]))]
    return state, history


class Saver:
    """An `on_epoch` observer that saves the chunk's state now and then.

    Never after the last epoch: the chunk's tables are written then instead.
    """

    def __init__(self, out: Path, chunk: list[int], size: int, epochs: int):
        self.out, self.chunk, self.size, self.epochs = out, chunk, size, epochs
        self.every = every_s()
        self.last_save = time.time()

    def __call__(self, epoch: int, state, history) -> None:
        if epoch + 1 < self.epochs and time.time() - self.last_save >= self.every:
            leaves = jax.device_get(jax.tree.leaves(state))
            results.save_chunk_state(self.out, self.chunk, self.size, leaves, history)
            self.last_save = time.time()
