import os
from pathlib import Path

import jax
import pytest

# The shared CIFAR-10 sits beside the checkout (../shared), in CI as here.
os.environ.setdefault(
    "SWEEP_TEST_DATA",
    str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"),
)

# Silent broadcasting across the replica axis is a bug, not a convenience.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session")
def shared_data() -> str:
    """The shared CIFAR-10 parquet folder; tests that need it skip without it."""
    path = os.environ["SWEEP_TEST_DATA"]
    if not os.path.exists(os.path.join(path, "train.parquet")):
        pytest.skip(f"shared CIFAR-10 not found at {path} (set SWEEP_TEST_DATA)")
    return path
