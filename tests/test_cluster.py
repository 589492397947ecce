"""Chunks as Ray tasks on a real local Ray cluster (2 CPU workers on this machine).

The driver is a real `python -m sweep --cluster ray` process; it starts the local
cluster (ray.init with this machine's 2 CPUs) and it ends with it. Results must
equal a local run's; a worker SIGKILLed mid-chunk must be retried with nothing lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sweep.errors import SweepError
from tests.fixtures_data import shared_slice, write_parquet_dataset

pytestmark = pytest.mark.slow  # a real Ray cluster

TABLES = ("metrics", "confusion", "summary", "poisoned")


def sweep_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sweep", "--data", str(data_dir), "--counts", "5",
            "--pairs", "cat:dog,dog:cat", "--seeds", "2", "--epochs", "2",
            "--replicas-per-step", "2", "--out", str(out), "--quiet", *extra]


def test_cluster_spec_is_checked():
    from sweep.experiment.config import parse_cluster

    assert parse_cluster("ray") is None
    assert parse_cluster("ray://head:10001") == "ray://head:10001"
    for bad in ("spark", "ray://", "ray:/x"):
        with pytest.raises(SweepError, match="--cluster"):
            parse_cluster(bad)


def test_missing_ray_is_one_line(monkeypatch):
    from sweep.experiment.running import train_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what an absent package does
    with pytest.raises(SweepError, match=r'pip install -e "\.\[ray\]"'):
        train_ray.import_ray()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pytest.importorskip("ray")
    root = tmp_path_factory.mktemp("cluster")
    data_dir = write_parquet_dataset(root / "data", shared_slice(20, 5))
    env = {**os.environ, "SWEEP_CACHE": str(root / "cache"), "SWEEP_CHECKPOINT_S": "0"}
    reference = root / "reference"
    done = subprocess.run(sweep_args(data_dir, reference), env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return root, data_dir, env, reference


def assert_same_tables(out: Path, reference: Path) -> None:
    for name in TABLES:
        got = pd.read_parquet(out / f"{name}.parquet")
        want = pd.read_parquet(reference / f"{name}.parquet")
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=name)


@pytest.mark.slow
def test_ray_cluster_equals_a_local_run_with_a_worker_killed(setup):
    """3 chunks (6 replicas, 2 a chunk) on 2 workers; the first task to start is
    SIGKILLed once it has checkpointed an epoch; Ray reruns it, it continues from
    the checkpoint, and every table equals the uninterrupted local run's."""
    root, data_dir, env, reference = setup
    out = root / "ray"
    pids = root / "pids"
    pids.mkdir()
    proc = subprocess.Popen(sweep_args(data_dir, out, "--cluster", "ray"),
                            env={**env, "SWEEP_TASK_PID_DIR": str(pids)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    killed = None
    try:
        deadline = time.time() + 500
        while proc.poll() is None and time.time() < deadline and killed is None:
            for f in sorted(pids.iterdir()):
                chunk = f.name.split(".")[0]
                # Mid-chunk: after its first epoch's checkpoint, before its tables.
                if (out / "chunks" / f"{chunk}.state.npz").exists():
                    killed = (chunk, int(f.read_text()))
                    os.kill(killed[1], signal.SIGKILL)
                    break
            time.sleep(0.05)
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert killed is not None, "no task reached its checkpoint while watched"
    attempts = [f for f in pids.iterdir() if f.name.startswith(killed[0] + ".")]
    assert len(attempts) == 2  # killed once, retried once
    assert_same_tables(out, reference)
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    records = manifest["timings"]["chunks"]
    assert len(records) == 3
    assert any(r.get("resumed_at_epoch") == 1 for r in records)
