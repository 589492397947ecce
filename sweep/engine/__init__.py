"""The engine: many replicas of a model trained together on one device (or a mesh).

It owns the device and knows nothing of poisoning, configs or results folders:
a replica is "these training labels (and images), these keys", a model is
"init, apply" over a parameter pytree (`ModelSpec`).

Modules, bottom up:
  spec           Recipe, ModelSpec, TrainState, ReplicaKeys, EpochMetrics, Subsets,
                 Stamps
  triggers       trigger backdoors' stamp op (BadNets, Blend) on uint8 images
  optim          the optimizer as a text spec of optax calls, applied per replica
  simple_cnn     the reference SimpleCNN (single and replica-batched layers)
  transfer_head  the course project's head on frozen features
  batches        each replica's shuffled batches for an epoch
  step           one optimizer step for every replica
  sharding       the replica axis across local devices
  trainer        compiled epochs and evaluation; `Engine`, `SubsetEngine`
  memory         how many replicas fit the device
"""

from sweep.engine.batches import epoch_batches, isolated_batches, subset_batches
from sweep.engine.evaluation import (
    make_evaluate,
    make_log_probs,
    make_predict,
    pad_eval_set,
)
from sweep.engine.simple_cnn import SIMPLE_CNN
from sweep.engine.spec import (
    EpochMetrics,
    ModelSpec,
    Recipe,
    ReplicaKeys,
    Stamps,
    Subsets,
    TrainState,
    replica_keys,
)
from sweep.engine.step import (
    init_state,
    keep_inactive,
    make_train_step,
    margins,
    optimizer,
)
from sweep.engine.trainer import (
    TICKS_PER_EPOCH,
    Engine,
    SubsetEngine,
    make_isolated_epoch,
    make_subset_epoch,
    make_train_epoch,
    time_single_step,
)
from sweep.engine.triggers import Trigger

__all__ = [
    "SIMPLE_CNN",
    "TICKS_PER_EPOCH",
    "Engine",
    "EpochMetrics",
    "ModelSpec",
    "Recipe",
    "ReplicaKeys",
    "Stamps",
    "SubsetEngine",
    "Subsets",
    "TrainState",
    "Trigger",
    "epoch_batches",
    "init_state",
    "keep_inactive",
    "isolated_batches",
    "make_evaluate",
    "make_isolated_epoch",
    "make_log_probs",
    "make_predict",
    "make_subset_epoch",
    "make_train_epoch",
    "make_train_step",
    "margins",
    "optimizer",
    "pad_eval_set",
    "replica_keys",
    "subset_batches",
    "time_single_step",
]
