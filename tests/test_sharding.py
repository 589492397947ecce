"""The replica axis sharded over 4 (virtual CPU) devices gives the 1-device numbers.

Runs real `python -m sweep` processes with
XLA_FLAGS=--xla_force_host_platform_device_count=4 (the flag must be set before
JAX starts, hence subprocesses) on a slice of the shared CIFAR-10.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.fixtures_data import shared_slice, write_parquet_dataset

pytestmark = pytest.mark.slow  # two sweeps, one over 4 virtual devices


def run_sweep(data_dir, out, *extra):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    args = [sys.executable, "-m", "sweep", "--data", str(data_dir), "--counts",
            "3,10", "--pairs", "cat:dog,dog:cat", "--seeds", "3", "--epochs", "1",
            "--replicas-per-step", "4", "--out", str(out), "--quiet", *extra]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharding")
    data_dir = write_parquet_dataset(root / "data", shared_slice(20, 5))
    one = run_sweep(data_dir, root / "one", "--devices", "1")
    four = run_sweep(data_dir, root / "four")  # all 4 by default
    return one, four


def test_manifest_records_the_devices(sweeps):
    one, four = sweeps
    assert json.loads((one / "manifest.json").read_text())["devices_used"] == 1
    m4 = json.loads((four / "manifest.json").read_text())
    assert m4["devices_used"] == 4
    assert m4["replicas_per_step"] % 4 == 0


def test_four_devices_give_the_one_device_numbers(sweeps):
    """Metrics, confusion and the whole summary match bit for bit, losses too: a
    device holding one replica of the chunk computes what one device holding all
    four does (kernels/invariance.py; before it, XLA:CPU summed the losses in
    another order and ~15% of the loss rows moved by 1 ulp)."""
    one, four = sweeps
    for name in ("metrics", "confusion", "summary"):
        a = pd.read_parquet(one / f"{name}.parquet")
        b = pd.read_parquet(four / f"{name}.parquet")
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=name)
