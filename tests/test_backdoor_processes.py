"""Backdoor sweeps as real processes: killed with SIGKILL, a clean-label sweep
continues bit for bit; sharded over 4 virtual devices, it gives the 1-device
numbers.

Resume:

Real `python -m sweep` processes on 200 images of the embedded sample: 6
replicas (counts 0/4/8 x 2 seeds) in 3 chunks of 2, 2 epochs, a checkpoint
after every epoch. One process is killed as soon as its manifest exists
(before or while it trains the surrogate and perturbs), the next mid-chunk,
the next between chunks; the last finishes. Its tables (asr included) and its
perturbed images must equal those of a sweep never interrupted. Clean-label
covers the most state: the trigger, the stamps, the perturbed copies and the
stamped evaluation in the checkpoints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweep.experiment.running import perturbation
from tests.test_resume import assert_same_tables, run_until

pytestmark = pytest.mark.slow


def sweep_args(out: Path, epochs: int = 2, per_step: int = 2,
               counts: str = "4,8") -> list[str]:
    return [sys.executable, "-m", "sweep", "--data", "sample", "--train-size", "200",
            "--attack", "clean-label", "--counts", counts, "--seeds", "2",
            "--epochs", str(epochs), "--replicas-per-step", str(per_step),
            "--out", str(out), "--quiet"]


def test_a_killed_clean_label_sweep_continues_bit_for_bit(tmp_path):
    env = {**os.environ, "SWEEP_CACHE": str(tmp_path / "cache"),
           "SWEEP_CHECKPOINT_S": "0", "SWEEP_NO_TFDS": "1"}
    env.pop("SWEEP_DATA", None)
    reference = tmp_path / "reference"
    done = subprocess.run(sweep_args(reference), env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    # The killed sweep trains its own surrogate: another cache.
    env["SWEEP_CACHE"] = str(tmp_path / "cache-killed")
    out = tmp_path / "killed"
    chunks = out / "chunks"
    args = sweep_args(out)
    assert run_until(args, env, lambda: (out / "manifest.json").exists(), timeout=900)
    assert run_until(args, env, lambda: (chunks / "r00000-00001.state.npz").exists(),
                     timeout=900)
    assert not (chunks / "r00000-00001.metrics.parquet").exists()
    assert run_until(args, env,
                     lambda: (chunks / "r00000-00001.metrics.parquet").exists(),
                     timeout=900)
    finished = subprocess.run(args + ["--resume"], env=env, capture_output=True,
                              text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr
    assert "resuming" in finished.stderr
    assert_same_tables(out, reference)
    a = perturbation.read(out / perturbation.PERTURBED)
    b = perturbation.read(reference / perturbation.PERTURBED)
    np.testing.assert_array_equal(a.index, b.index)
    np.testing.assert_array_equal(a.images, b.images)
    assert not list(chunks.glob("*.state.npz"))


def test_four_devices_give_the_one_device_numbers(tmp_path):
    """Stamps and rows sharded with the replicas, the trigger and the stamped
    test set copied to every device: the same accuracies and attack success
    (the loss columns within float32 rounding, as tests/test_sharding.py says)."""
    env = {**os.environ, "SWEEP_CACHE": str(tmp_path / "cache"), "SWEEP_NO_TFDS": "1",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env.pop("SWEEP_DATA", None)
    outs = []
    for devices in ("1", "4"):
        out = tmp_path / f"devices{devices}"
        # 4 replicas (counts 0 and 8 x 2 seeds): one chunk of 4 either way.
        done = subprocess.run(sweep_args(out, epochs=1, per_step=4, counts="8")
                              + ["--devices", devices], env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
        outs.append(pd.read_parquet(out / "metrics.parquet"))
    exact = ["replica", "count", "seed", "class_id", "correct", "accuracy", "asr",
             "robust_accuracy", "n_stamped", "stamped_correct", "stamped_to_target"]
    pd.testing.assert_frame_equal(outs[0][exact], outs[1][exact], check_exact=True)
    for column in ("train_loss", "test_loss"):
        np.testing.assert_allclose(outs[0][column], outs[1][column], rtol=1e-6)
