"""The replica axis across the devices of one host.

Replicas never exchange anything, so the sweep shards the leading (replica) axis
of every per-replica array (parameters, Adam moments, labels, keys) over a 1-D
mesh and replicates the training and test images on every device. The engine's
jitted functions are unchanged: XLA partitions them along the replica axis from
the input shardings, one compiled program for the whole chunk, with no
communication between devices in the training step.

A chunk's replica count must be a multiple of the device count (the run pads
chunks to one, as it already pads them to a common size).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sweep.errors import SweepError

AXIS = "replica"


def local_devices(n: int | None) -> list:
    """The first `n` local devices (all when None), refusing more than there are."""
    devices = jax.local_devices()
    if n is None:
        return devices
    if n > len(devices):
        raise SweepError(
            f"--devices {n} asks for more devices than this host has "
            f"({len(devices)} {jax.default_backend()} device(s))"
        )
    return devices[:n]


class ReplicaSharding:
    """Where per-replica and shared arrays live on a 1-D mesh of devices."""

    def __init__(self, devices: Sequence):
        self.mesh = Mesh(np.asarray(devices), (AXIS,))
        self.n = len(devices)
        self.replicas = NamedSharding(self.mesh, PartitionSpec(AXIS))
        self.shared = NamedSharding(self.mesh, PartitionSpec())

    def put_shared(self, x):
        """A copy on every device (the images)."""
        return jax.device_put(x, self.shared)

    def put_replicas(self, tree, r: int):
        """Shard every leaf whose leading axis is the replica axis (length r);
        scalars (the step counters) are replicated."""

        def place(x):
            shape = np.shape(x)
            if shape and shape[0] == r:
                return jax.device_put(x, self.replicas)
            return jax.device_put(x, self.shared)

        if r % self.n:
            raise ValueError(f"{r} replicas do not split evenly over {self.n} devices")
        return jax.tree.map(place, tree)


def round_up(size: int, n_devices: int) -> int:
    """The smallest multiple of the device count that holds `size` replicas."""
    return -(-size // n_devices) * n_devices
