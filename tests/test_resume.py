"""A sweep killed with SIGKILL at several points resumes to the same results.

Real `python -m sweep` processes on a slice of CIFAR-10: 6 replicas in 3 chunks
of 2, 3 epochs, a checkpoint after every epoch (SWEEP_CHECKPOINT_S=0). One
process is killed mid-chunk, the next between chunks, the next mid-way through
a later chunk; the last finishes. Its tables must equal, bit for bit, those of a
sweep that was never interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.fixtures_data import shared_slice, write_parquet_dataset

pytestmark = pytest.mark.slow  # kill-and-resume runs of real sweeps in subprocesses

TABLES = ("metrics", "confusion", "summary", "poisoned")


def sweep_args(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sweep", "--data", str(data_dir),
            "--counts", "5,20", "--seeds", "2", "--epochs", "3",
            "--replicas-per-step", "2", "--out", str(out), "--quiet", *extra]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    data_dir = write_parquet_dataset(root / "data", shared_slice(20, 5))
    env = {**os.environ, "SWEEP_CACHE": str(root / "cache"), "SWEEP_CHECKPOINT_S": "0"}
    reference = root / "reference"
    done = subprocess.run(sweep_args(data_dir, reference), env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return root, data_dir, env, reference


def run_until(args: list[str], env: dict, condition, timeout: float = 300) -> bool:
    """Start a sweep and SIGKILL it once `condition()` holds; True if it was killed."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    try:
        while proc.poll() is None and time.time() < deadline:
            if condition():
                proc.send_signal(signal.SIGKILL)
                proc.communicate()
                return True
            time.sleep(0.02)
        _, stderr = proc.communicate()
        assert proc.returncode == 0, stderr
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def assert_same_tables(out: Path, reference: Path) -> None:
    for name in TABLES:
        got = pd.read_parquet(out / f"{name}.parquet")
        want = pd.read_parquet(reference / f"{name}.parquet")
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=name)


def test_killed_three_times_resumes_to_identical_results(setup):
    root, data_dir, env, reference = setup
    out = root / "killed"
    chunks = out / "chunks"
    args = sweep_args(data_dir, out)
    # Mid-chunk: the first chunk has a checkpoint but no tables yet.
    assert run_until(args, env, lambda: any(chunks.glob("r00000-00001.state.npz")))
    assert not (chunks / "r00000-00001.metrics.parquet").exists()
    # Between chunks: the first chunk's tables are written.
    assert run_until(args, env, lambda: (chunks / "r00000-00001.metrics.parquet").exists())
    # Mid-way through the second chunk.
    assert run_until(args, env, lambda: (chunks / "r00002-00003.state.npz").exists())
    finished = subprocess.run(args + ["--resume"], env=env, capture_output=True,
                              text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert "resuming" in finished.stderr
    assert_same_tables(out, reference)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    # The second chunk continued from its checkpoint instead of starting over.
    assert any(c.get("resumed_at_epoch", 0) >= 1 for c in manifest["timings"]["chunks"])
    assert not list(chunks.glob("*.state.npz"))
    assert not list(out.rglob(".*.tmp")), "a temporary file was left behind"


def test_killed_before_any_chunk_finishes(setup):
    root, data_dir, env, reference = setup
    out = root / "early"
    args = sweep_args(data_dir, out)
    assert run_until(args, env, lambda: (out / "manifest.json").exists())
    finished = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert_same_tables(out, reference)


def test_results_are_readable_by_others(setup):
    _, _, _, reference = setup
    for path in [reference / "manifest.json", *reference.glob("*.parquet")]:
        assert path.stat().st_mode & 0o044 == 0o044, path


@pytest.mark.parametrize("option, value, fragment", [
    ("--epochs", "2", "epochs: 3 -> 2"),
    ("--poison-seed", "1", "poison_seed: 0 -> 1"),
    ("--unpaired", None, "paired: True -> False"),
])
def test_resuming_with_other_options_says_what_differs(setup, option, value, fragment):
    _, data_dir, env, reference = setup
    args = sweep_args(data_dir, reference)
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option] + ([value] if value is not None else [])
    done = subprocess.run(args + ["--resume"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2
    assert fragment in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_resuming_on_other_data_is_refused(setup, tmp_path):
    _, _, env, reference = setup
    other = write_parquet_dataset(tmp_path / "other", shared_slice(21, 5))
    done = subprocess.run(sweep_args(other, reference) + ["--resume"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "different data" in done.stderr and "Traceback" not in done.stderr


def test_resume_without_a_sweep_is_refused(setup, tmp_path):
    _, data_dir, env, _ = setup
    done = subprocess.run(sweep_args(data_dir, tmp_path / "none") + ["--resume"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "nothing to resume" in done.stderr
