"""What a run ran on and from: package versions, device, CPU, git commit.

The one place environment and git are captured; `bench/` scripts import it too,
so a benchmark's header and a sweep's manifest describe a machine the same way.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import jax

# The packages whose versions a manifest records.
MANIFEST_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "pandas", "pyarrow")


def versions(packages: tuple[str, ...] = MANIFEST_PACKAGES) -> dict:
    """Python's version and each installed package's (None when missing)."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def device() -> dict:
    """The first device's backend and kind, the device count, the host."""
    dev = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "kind": dev.device_kind,
        "count": jax.device_count(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
    }


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo, else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def git_commit(*, mark_dirty: bool = False) -> str | None:
    """HEAD of the checkout this code runs from, None outside git.

    Args:
      mark_dirty: append "+dirty" when tracked files have uncommitted changes
        (benchmarks do: their numbers belong to the code as it was run).
    """
    cwd = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              timeout=5, cwd=cwd).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = mark_dirty and git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if head and dirty else "")) or None


def environment() -> dict:
    """Versions, device and commit, for the manifest."""
    return {
        "versions": versions(),
        "device": device(),
        "commit": git_commit(),
        "argv": sys.argv,
    }
