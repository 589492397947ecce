"""The wheel holds the whole package: what `pip install .` (not -e) gives a user.

The editable install the tests run from finds every module in the source tree,
so a package left out of the wheel (as `sweep.detect` once was) only shows
from a built wheel. Built here from a copy of the project (setuptools writes
build/ beside the sources), then unpacked, as an install does, and run from
there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # builds and runs a wheel

ROOT = Path(__file__).resolve().parents[1]


def source_files() -> set[str]:
    """Every module of the packages, and the embedded sample, as wheel paths."""
    found = set()
    for package in ("sweep", "kernels"):
        for path in (ROOT / package).rglob("*"):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            if path.suffix == ".py" or path.match("sweep/sample/*.parquet"):
                found.add(path.relative_to(ROOT).as_posix())
    return found


def test_the_wheel_holds_every_module_and_runs(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("sweep", "kernels"):
        shutil.copytree(ROOT / name, project / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path / "dist"), str(project)],
        capture_output=True, text=True, timeout=600,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("sweep-*.whl")
    with zipfile.ZipFile(wheel) as z:
        in_wheel = set(z.namelist())
        z.extractall(tmp_path / "site")
    missing = sorted(source_files() - in_wheel)
    assert missing == [], f"not in the wheel: {missing}"

    # Run from the unpacked wheel alone: the checkout is not on the path.
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    where = subprocess.run(
        [sys.executable, "-c", "import sweep; print(sweep.__file__)"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert where.stdout.strip().startswith(str(tmp_path / "site")), where
    for command in (["detect", "--help"], ["--help"], ["verify", "--help"]):
        done = subprocess.run(
            [sys.executable, "-m", "sweep", *command], capture_output=True,
            text=True, timeout=300, env=env, cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert "usage: python -m sweep" in done.stdout
