"""Failures during training: a diverged replica, and running out of device memory.

Divergence: a replica whose loss goes non-finite is flagged `diverged`, left out
of the statistics and counted in the manifest and the report, while the other
replicas train on unaffected. A replica is made to diverge by setting its
parameters to NaN at initialisation, the one seam that touches a single replica
and nothing else; everything after that (the loss, the flag, the exclusion, the
counts) is the real code path.

Out of memory: the device error is injected where the device would raise it
(`Engine.train`, for chunks larger than 2 replicas); the sweep must halve its
chunks until they fit and compute exactly what a sweep run at that size does.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from sweep import data, engine
from sweep.cli.main import main
from sweep.experiment.config import Config
from sweep.experiment.running import run_sweep
from tests.fixtures_data import write_parquet_dataset

CAT = 3


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SWEEP_NO_TFDS", "1")
    monkeypatch.delenv("SWEEP_DATA", raising=False)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """Random pixels under CIFAR-10's names: 10 train and 2 test images per class."""
    rng = np.random.default_rng(0)
    arrays = []
    for n in (10, 2):
        labels = np.repeat(np.arange(10), n)
        images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
        arrays += [images, labels]
    ds = data.dataset_from_arrays(*arrays, data.CIFAR10_CLASSES, source="tiny")
    return write_parquet_dataset(tmp_path_factory.mktemp("failures") / "data", ds)


def tiny_config(data_dir: Path, out: Path, **changes) -> Config:
    config = Config(data=str(data_dir), counts=("2",), seeds=3, epochs=2, batch_size=50,
                    kernel="im2col", out=str(out))
    return config.replace(**changes)


def with_nan_params(state: engine.TrainState, replica: int) -> engine.TrainState:
    """The state with every parameter of one replica set to NaN."""
    params = jax.tree.map(lambda leaf: leaf.at[replica].set(jnp.nan), state.params)
    return state._replace(params=params)


# Divergence.


@pytest.mark.slow
def test_a_nan_replica_diverges_alone_and_the_others_are_untouched():
    rng = np.random.default_rng(1)
    n_train, r = 40, 3
    images = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, (r, n_train)).astype(np.int32)
    test_x = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    test_y = rng.integers(0, 10, 10).astype(np.int32)
    recipe = engine.Recipe(n_train=n_train, n_classes=10, batch_size=20,
                           kernel="im2col", eval_batch_size=10)
    eng = engine.Engine(recipe, images, test_x, test_y)
    keys = engine.replica_keys(np.array([0, 1, 2]), np.zeros(r))

    clean_state, clean = eng.train(labels, keys, epochs=2)
    poked = with_nan_params(eng.init(keys), 1)
    state, history = eng.train(labels, keys, epochs=2, start=(poked, []))

    for epoch in range(2):
        assert not np.isfinite(history[epoch].train_loss[1])
        assert not np.isfinite(history[epoch].test_loss[1])
        for field in ("train_loss", "train_accuracy", "test_loss", "confusion"):
            np.testing.assert_array_equal(
                getattr(history[epoch], field)[[0, 2]],
                getattr(clean[epoch], field)[[0, 2]], err_msg=field,
            )
    assert np.isfinite(clean[-1].train_loss).all()
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(clean_state.params)):
        np.testing.assert_array_equal(np.asarray(a)[[0, 2]], np.asarray(b)[[0, 2]])


@pytest.fixture(scope="module")
def diverged_sweep(tiny_data, tmp_path_factory):
    """(results folder, the poked replica's (count, seed)) of a sweep where one
    replica diverged.

    Counts (0, 2) x seeds (0, 1, 2) in one chunk of 6; replica 3 is seed 1,
    count 2, and its parameters are NaN from the start. (That the others then
    compute exactly what they would have is the engine-level test above; here
    a second, clean sweep would only cost another compile.)
    """
    root = tmp_path_factory.mktemp("diverged")
    original_init = engine.Engine.init
    mp = pytest.MonkeyPatch()
    mp.setenv("SWEEP_CACHE", str(root / "cache"))
    mp.setattr(engine.Engine, "init",
               lambda self, keys: with_nan_params(original_init(self, keys), 3))
    try:
        out = run_sweep.run(tiny_config(tiny_data, root / "diverged", replicas_per_step=6),
                      log=lambda s: None)
    finally:
        mp.undo()
    return out, (2, 1)


@pytest.mark.slow
def test_diverged_replica_is_flagged_and_counted(diverged_sweep):
    out, (count, seed) = diverged_sweep
    metrics = pd.read_parquet(out / "metrics.parquet")
    flagged = metrics.groupby(["replica", "count", "seed"])["diverged"].all()
    assert flagged[flagged].index.tolist() == [(3, count, seed)]
    assert not np.isfinite(metrics.loc[metrics["replica"] == 3, "train_loss"]).any()
    # The other replicas carried on: every epoch recorded, every loss finite.
    others = metrics[metrics["replica"] != 3]
    assert not others["diverged"].any()
    assert np.isfinite(others[["train_loss", "test_loss", "accuracy"]]).all().all()
    assert sorted(metrics["epoch"].unique()) == [1, 2]
    assert len(metrics) == 6 * 2 * 10
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["n_diverged"] == 1


@pytest.mark.slow
def test_statistics_leave_the_diverged_seed_out(diverged_sweep):
    out, (count, seed) = diverged_sweep
    summary = pd.read_parquet(out / "summary.parquet")
    assert (summary["count"] == count).all()
    # Three seeds ran; the diverged replica takes its seed's pair out.
    assert (summary["n_seeds"] == 2).all() and (summary["n_diverged"] == 1).all()
    # The delta is the mean over the two surviving seeds' twin differences only.
    m = pd.read_parquet(out / "metrics.parquet")
    last = m[(m["epoch"] == m["epoch"].max()) & (m["class_id"] == CAT)]
    acc = last.set_index(["count", "seed"])["accuracy"]
    deltas = [acc[count, s] - acc[0, s] for s in (0, 1, 2) if s != seed]
    row = summary[summary["class_id"] == CAT].iloc[0]
    assert row["delta_mean"] == pytest.approx(np.mean(deltas))
    assert np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"])


@pytest.mark.slow
def test_report_states_how_many_replicas_diverged(diverged_sweep, capsys):
    out, (count, seed) = diverged_sweep
    assert main(["report", str(out)]) == 0
    shown = capsys.readouterr()
    assert "Traceback" not in shown.err
    text = (out / "report.md").read_text()
    assert f"Diverged replicas: 1 left out (count, seed): ({count}, {seed})" in text
    summary = pd.read_parquet(out / "summary.parquet")  # rewritten by the report
    assert (summary["n_seeds"] == 2).all() and (summary["n_diverged"] == 1).all()


# Out of device memory.


def device_oom(bytes_wanted: int) -> Exception:
    """What XLA raises when an allocation does not fit."""
    return jax.errors.JaxRuntimeError(
        f"RESOURCE_EXHAUSTED: Out of memory while trying to allocate {bytes_wanted} "
        "bytes."
    )


@pytest.fixture
def fits_two(monkeypatch):
    """Engine.train raises a device OOM for chunks of more than 2 replicas;
    returns the chunk sizes it was asked for."""
    asked = []
    original = engine.Engine.train

    def train(self, labels, *args, **kwargs):
        asked.append(len(labels))
        if len(labels) > 2:
            raise device_oom(len(labels) * 10**9)
        return original(self, labels, *args, **kwargs)

    monkeypatch.setattr(engine.Engine, "train", train)
    return asked


@pytest.mark.slow
def test_out_of_memory_falls_back_to_smaller_chunks(tiny_data, tmp_path, fits_two):
    # 2 counts x 4 seeds = 8 replicas: 8 fails, 4 fails, 2 fits.
    config = tiny_config(tiny_data, tmp_path / "oom", seeds=4, epochs=1,
                         replicas_per_step=8)
    logged = []
    out = run_sweep.run(config, log=logged.append)
    assert fits_two == [8, 4, 2, 2, 2, 2]
    assert logged == ["out of device memory; retrying with 4 replicas per step",
                      "out of device memory; retrying with 2 replicas per step"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["replicas_per_step"] == 2
    chunks = manifest["timings"]["chunks"]
    assert [c["padded_to"] for c in chunks] == [2, 2, 2, 2]
    assert sum(c["replicas"] for c in chunks) == 8
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert sorted(metrics["replica"].unique()) == list(range(8))

    # Exactly what a sweep told to use 2 replicas per step computes.
    fits_two.clear()
    reference = run_sweep.run(config.replace(out=str(tmp_path / "ref"), replicas_per_step=2),
                        log=lambda s: None)
    assert fits_two == [2, 2, 2, 2]
    for table in ("metrics", "confusion", "summary"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{table}.parquet"),
                                      pd.read_parquet(reference / f"{table}.parquet"),
                                      obj=table)


def test_out_of_memory_at_one_replica_is_a_one_line_error(
    tiny_data, tmp_path, monkeypatch, capsys
):
    def train(self, labels, *args, **kwargs):
        raise device_oom(10**12)

    monkeypatch.setattr(engine.Engine, "train", train)
    status = main(["--data", str(tiny_data), "--counts", "2", "--seeds", "1",
                   "--epochs", "1", "--replicas-per-step", "2", "--quiet",
                   "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[:-1] == ["out of device memory; retrying with 1 replicas per step"]
    assert lines[-1] == ("sweep: error: out of device memory even with one replica "
                         "per step; try a smaller --batch-size or --train-size")


def test_other_device_errors_are_not_mistaken_for_memory(tiny_data, tmp_path,
                                                         monkeypatch):
    asked = []

    def train(self, labels, *args, **kwargs):
        asked.append(len(labels))
        raise jax.errors.JaxRuntimeError("INTERNAL: something else broke")

    monkeypatch.setattr(engine.Engine, "train", train)
    config = tiny_config(tiny_data, tmp_path / "out", replicas_per_step=6)
    with pytest.raises(jax.errors.JaxRuntimeError, match="something else broke"):
        run_sweep.run(config, log=lambda s: None)
    assert asked == [6]  # no retry at a smaller size
