"""One writer per results folder: a second sweep refuses, a dead one's lock is taken.

Real `python -m sweep` processes on a tiny parquet folder. The first is stopped
(SIGSTOP) once it holds the lock, so it is alive but makes no progress: no
timing decides the outcome. The second must refuse in one line naming the
first's pid; after the first is killed (SIGKILL: its lock stays behind, stale),
the same command takes the lock over and completes the sweep.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweep import data
from sweep.errors import SweepError
from sweep.results import lock
from tests.fixtures_data import synthetic_dataset, write_parquet_dataset


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    ds = synthetic_dataset(10, 2, class_names=data.CIFAR10_CLASSES)
    return write_parquet_dataset(tmp_path_factory.mktemp("lock") / "data", ds)


def sweep_cmd(data_dir: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "sweep", "--data", str(data_dir), "--out", str(out),
            "--counts", "2", "--seeds", "1", "--epochs", "1", "--quiet"]


@pytest.mark.slow
def test_second_process_refuses_then_takes_over_a_dead_ones_lock(tiny_data, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "SWEEP_CACHE": str(tmp_path / "cache")}
    first = subprocess.Popen(sweep_cmd(tiny_data, out), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        # The manifest is written under the lock, after the lock's guard is let go.
        while not (out / "manifest.json").exists():
            assert first.poll() is None, "the first sweep ended before locking"
            assert time.time() < deadline
            time.sleep(0.01)
        first.send_signal(signal.SIGSTOP)
        holder = json.loads((out / lock.LOCK).read_text())
        assert holder["pid"] == first.pid and holder["host"] == platform.node()

        second = subprocess.run(sweep_cmd(tiny_data, out), env=env,
                                capture_output=True, text=True, timeout=300)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1, second.stderr
        assert f"being written by another sweep (pid {first.pid} on " in lines[0]
        assert not (out / "metrics.parquet").exists()
    finally:
        first.kill()  # SIGKILL works on a stopped process; the lock stays behind
        first.wait()
    assert (out / lock.LOCK).exists()

    third = subprocess.run(sweep_cmd(tiny_data, out), env=env, capture_output=True,
                           text=True, timeout=300)
    assert third.returncode == 0, third.stderr
    assert (out / "metrics.parquet").exists()
    assert not (out / lock.LOCK).exists(), "a finished sweep left its lock behind"


def write_lock(out: Path, **holder) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / lock.LOCK).write_text(json.dumps(holder))


def test_a_lock_from_another_host_is_refused_with_the_way_out(tmp_path):
    write_lock(tmp_path, pid=1, host="elsewhere.example", started="yesterday")
    with pytest.raises(SweepError, match=r"pid 1 on elsewhere.example, started "
                       r"yesterday\); if that sweep is no longer running, delete"):
        with lock.hold(tmp_path):
            pass


def test_a_live_pid_whose_process_started_later_is_a_stale_lock(tmp_path):
    # Our own pid, but recorded with another start time: the pid was reused.
    write_lock(tmp_path, pid=os.getpid(), host=platform.node(), proc_start="1")
    with lock.hold(tmp_path):
        assert json.loads((tmp_path / lock.LOCK).read_text())["proc_start"] != "1"
    assert not (tmp_path / lock.LOCK).exists()


def test_a_live_holder_on_this_host_is_refused(tmp_path):
    with lock.hold(tmp_path):
        with pytest.raises(SweepError, match=f"pid {os.getpid()} on "):
            with lock.hold(tmp_path):
                pass
        assert (tmp_path / lock.LOCK).exists()  # the refusal did not take it
    assert not (tmp_path / lock.LOCK).exists()
