"""`python -m sweep verify`: a finished sweep re-checked against its data.

One small sweep (200 training images of the shared CIFAR-10, counts 5 and 20 x 2
seeds, 1 epoch, in chunks of 3 replicas) runs once as a real process, with the
data and results given as paths relative to its working folder. Each test then
verifies it, or a copy of it with one thing changed, the way a user would.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweep import data as data_lib
from sweep.cli.main import main
from tests.fixtures_data import shared_slice, write_parquet_dataset
from tests.test_cli import sweep_cli

pytestmark = pytest.mark.slow  # a real sweep, verified against altered copies

CAT, DOG = 3, 5
N_REPLICAS = 6  # counts 0, 5, 20 x seeds 0, 1


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """(root, results folder, data folder, cache) of one finished sweep."""
    root = tmp_path_factory.mktemp("verify")
    write_parquet_dataset(root / "data", shared_slice(20, 5))
    cache = root / "cache"
    done = sweep_cli(
        "--data", "data", "--counts", "5,20", "--seeds", "2", "--epochs", "1",
        "--replicas-per-step", "3", "--out", "results", "--quiet",
        env={**os.environ, "SWEEP_CACHE": str(cache)}, cwd=root,
    )
    assert done.returncode == 0, done.stderr
    return root, root / "results", root / "data", cache


@pytest.fixture
def cache_env(sweep, monkeypatch):
    monkeypatch.setenv("SWEEP_CACHE", str(sweep[3]))


def verify(capsys, *args: str) -> tuple[int, str, str]:
    """main(["verify", ...]) in this process: (status, stdout, stderr)."""
    status = main(["verify", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def copy_results(sweep, tmp_path: Path) -> Path:
    return Path(shutil.copytree(sweep[1], tmp_path / "results"))


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def edit_manifest(folder: Path, **changes) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_the_same_data_verifies_and_nothing_is_written(sweep):
    root, out, data_dir, cache = sweep
    before = snapshot(out)
    done = sweep_cli("verify", str(out), "--data", str(data_dir),
                     env={**os.environ, "SWEEP_CACHE": str(cache)})
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == f"verified: {out}"
    assert not [line for line in lines if line.startswith("FAIL")]
    for what in ("data content hash", "training subset hash", "poisoned.parquet",
                 "poisoned hash", "result tables", "metrics.parquet replicas"):
        assert any(line.startswith(f"ok   {what}") for line in lines), what
    assert done.stderr == ""
    assert snapshot(out) == before


def test_without_data_the_recorded_data_is_used(sweep, cache_env, capsys, monkeypatch):
    root, out, data_dir, _ = sweep
    # The sweep recorded --data data (relative); from its folder that resolves.
    monkeypatch.chdir(root)
    status, stdout, _ = verify(capsys, "results")
    assert status == 0, stdout
    assert "against data data" in stdout and stdout.endswith("verified: results\n")
    # From elsewhere it does not, so the absolute path it was loaded from is used.
    monkeypatch.chdir(out)
    monkeypatch.delenv("SWEEP_DATA", raising=False)
    status, stdout, _ = verify(capsys, out)
    assert status == 0, stdout
    assert f"against data {data_dir.resolve()}" in stdout


def test_changed_pixels_fail_the_data_hash(sweep, cache_env, capsys, tmp_path):
    ds = shared_slice(20, 5)
    test_images = ds.test_images.copy()
    test_images[0, 0, 0, 0] ^= 1  # one test image, one channel, one bit
    changed = data_lib.dataset_from_arrays(
        ds.train_images, ds.train_labels, test_images, ds.test_labels,
        ds.class_names, source="changed")
    data_dir = write_parquet_dataset(tmp_path / "changed", changed)
    status, stdout, stderr = verify(capsys, sweep[1], "--data", data_dir)
    assert status == 1, stdout + stderr
    fails = [line for line in stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1 and fails[0].startswith("FAIL data content hash: ")
    recorded = json.loads((sweep[1] / "manifest.json").read_text())["data_hash"]
    assert recorded.removeprefix("sha256:")[:12] in fails[0]
    assert changed.content_hash.removeprefix("sha256:")[:12] in fails[0]
    assert stdout.splitlines()[-1] == "verification failed: 1 check(s)"


def test_swapped_labels_change_the_poisoned_sets(sweep, cache_env, capsys, tmp_path):
    # Relabel one cat as a dog and one dog as a cat: as many cats as before,
    # but the seeded draw now lands on other images.
    ds = shared_slice(20, 5)
    labels = ds.train_labels.copy()
    cat, dog = np.flatnonzero(labels == CAT)[0], np.flatnonzero(labels == DOG)[0]
    labels[cat], labels[dog] = DOG, CAT
    changed = data_lib.dataset_from_arrays(
        ds.train_images, labels, ds.test_images, ds.test_labels, ds.class_names,
        source="relabelled")
    data_dir = write_parquet_dataset(tmp_path / "relabelled", changed)
    status, stdout, _ = verify(capsys, sweep[1], "--data", data_dir)
    assert status == 1, stdout
    fails = [line for line in stdout.splitlines() if line.startswith("FAIL")]
    assert any(f.startswith("FAIL data content hash") for f in fails), fails
    assert any(f.startswith("FAIL poisoned hash") for f in fails), fails
    [poisoned] = [f for f in fails if f.startswith("FAIL poisoned.parquet")]
    assert "count 20" in poisoned and "sets now drawn differ" in poisoned


def test_a_tampered_poisoned_file_fails(sweep, cache_env, capsys, tmp_path):
    out = copy_results(sweep, tmp_path)
    poisoned = pd.read_parquet(out / "poisoned.parquet")
    row = poisoned.index[poisoned["count"] == 20][0]
    not_a_cat = int(np.flatnonzero(shared_slice(20, 5).train_labels != CAT)[0])
    poisoned.loc[row, "index"] = not_a_cat
    poisoned.to_parquet(out / "poisoned.parquet", index=False)
    status, stdout, _ = verify(capsys, out, "--data", sweep[2])
    assert status == 1, stdout
    fails = [line for line in stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1, fails
    assert fails[0].startswith("FAIL poisoned.parquet: ")
    assert "count 20 (2 index(es) differ" in fails[0]
    assert "no longer matches the manifest" in fails[0]
    assert "count 5 " not in fails[0]


def test_an_unfinished_sweep_is_incomplete(sweep, cache_env, capsys, tmp_path):
    out = copy_results(sweep, tmp_path)
    for name in ("metrics", "summary", "confusion"):
        (out / f"{name}.parquet").unlink()
    chunks = sorted((out / "chunks").glob("*.metrics.parquet"))
    assert len(chunks) == 2  # 3 replicas each
    chunks[-1].unlink()
    edit_manifest(out, status="running")
    status, stdout, _ = verify(capsys, out, "--data", sweep[2])
    assert status == 1, stdout
    assert (f"FAIL results: incomplete: 3 of {N_REPLICAS} replicas done"
            in stdout)
    assert stdout.splitlines()[-1] == (
        "verification failed: 1 check(s) (the sweep is incomplete)")


def test_a_missing_replica_in_metrics_fails(sweep, cache_env, capsys, tmp_path):
    out = copy_results(sweep, tmp_path)
    metrics = pd.read_parquet(out / "metrics.parquet")
    gone = (metrics["count"] == 20) & (metrics["seed"] == 1)
    assert gone.any()
    metrics[~gone].to_parquet(out / "metrics.parquet", index=False)
    status, stdout, _ = verify(capsys, out, "--data", sweep[2])
    assert status == 1, stdout
    [line] = [f for f in stdout.splitlines() if f.startswith("FAIL")]
    assert line.startswith("FAIL metrics.parquet replicas: ")
    assert "missing: count 20 seed 1" in line


def test_other_versions_are_notes_not_failures(sweep, cache_env, capsys, tmp_path):
    out = copy_results(sweep, tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    edit_manifest(out, versions={**manifest["versions"], "jax": "0.0.1"})
    status, stdout, _ = verify(capsys, out, "--data", sweep[2])
    assert status == 0, stdout
    import jax

    assert f"note jax 0.0.1 then, {jax.__version__} now" in stdout


def test_bad_input_is_one_line_and_status_2(sweep, capsys, tmp_path):
    done = sweep_cli("verify", str(tmp_path / "nowhere"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "does not exist" in done.stderr
    assert done.stderr.startswith("sweep: error: ") and "Traceback" not in done.stderr
    assert done.stdout == ""

    status, stdout, stderr = verify(capsys, tmp_path)  # a folder, no manifest
    assert status == 2 and stdout == ""
    assert stderr.startswith("sweep: error: ") and "no manifest.json" in stderr

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    status, stdout, stderr = verify(capsys, broken)
    assert status == 2 and "not valid JSON" in stderr and stderr.count("\n") == 1

    status, stdout, stderr = verify(capsys, sweep[1], "--data", tmp_path / "absent")
    assert status == 2 and stdout == ""
    assert stderr.startswith("sweep: error: data path") and "does not exist" in stderr
