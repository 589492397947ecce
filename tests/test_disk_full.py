"""A disk that fills up mid-sweep: one line, no half-written file, resume completes.

Two real failures: ENOSPC on a small tmpfs (needs root to mount; skipped
without), and EFBIG from RLIMIT_FSIZE in a child process (any user).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from sweep import data
from tests.fixtures_data import synthetic_dataset, write_parquet_dataset

TABLES = ("metrics", "confusion", "summary", "poisoned")


def test_a_write_past_the_file_size_limit_is_one_line_and_leaves_no_temp(tmp_path):
    # The child ignores SIGXFSZ, so the kernel fails the write with EFBIG.
    code = """
import resource, signal, sys
import numpy as np, pandas as pd
from sweep import results
from sweep.errors import SweepError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
df = pd.DataFrame({"x": np.random.default_rng(0).random(100_000)})
try:
    results.write_parquet(df, sys.argv[1])
except SweepError as e:
    print(e)
"""
    target = tmp_path / "big.parquet"
    done = subprocess.run([sys.executable, "-c", code, str(target)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"file size limit exceeded writing {target}; free space and rerun the "
        "same command to resume")
    assert list(tmp_path.iterdir()) == [], "a half-written or temporary file was left"


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_disk_full_mid_sweep_stops_cleanly_and_resumes_to_the_same_numbers(
    tmp_path, small_disk
):
    ds = synthetic_dataset(10, 2, class_names=data.CIFAR10_CLASSES)
    data_dir = write_parquet_dataset(tmp_path / "data", ds)
    env = {**os.environ, "SWEEP_CACHE": str(tmp_path / "cache")}

    def cmd(out):
        return [sys.executable, "-m", "sweep", "--data", str(data_dir), "--out",
                str(out), "--counts", "2,5", "--seeds", "2", "--epochs", "1",
                "--replicas-per-step", "3", "--quiet"]

    reference = tmp_path / "reference"
    done = subprocess.run(cmd(reference), env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr

    out = small_disk / "out"
    proc = subprocess.Popen(cmd(out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "poisoned.parquet").exists():  # set up, not yet trained
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGSTOP)
    ballast = small_disk / "ballast"
    with open(ballast, "wb") as f:  # fill every byte left
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    proc.send_signal(signal.SIGCONT)
    _, stderr = proc.communicate(timeout=600)
    lines = stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, stderr
    assert lines[0].startswith("sweep: error: no space left on device writing ")
    assert lines[0].endswith("; free space and rerun the same command to resume")
    assert not list(out.rglob("*.tmp")), "a temporary file was left behind"
    for path in out.rglob("*.parquet"):  # whatever was written is whole
        pd.read_parquet(path)

    ballast.unlink()
    done = subprocess.run(cmd(out), env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    for name in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{name}.parquet"),
                                      pd.read_parquet(reference / f"{name}.parquet"))
