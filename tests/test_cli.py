"""The command line end to end: a real sweep process on a slice of CIFAR-10.

One small sweep (300 training images, 2 counts x 2 seeds, 2 epochs) is run once
as a real `python -m sweep` process; the tests read what it left behind the way
a user would, with pandas.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.fixtures_data import shared_slice, write_parquet_dataset

CAT, DOG = 3, 5
COUNTS = (0, 10, 30)  # 30 = every cat of the slice
SEEDS = 2
EPOCHS = 2
N_CLASSES = 10


def sweep_cli(*args: str, env: dict | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "sweep", *args],
        capture_output=True, text=True, timeout=600, env=env, cwd=cwd,
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(stdout, results folder, data folder) of one finished sweep with --report."""
    root = tmp_path_factory.mktemp("cli")
    data_dir = write_parquet_dataset(root / "data", shared_slice(30, 10))
    env = {**os.environ, "SWEEP_CACHE": str(root / "cache")}
    out = root / "results"
    done = sweep_cli(
        "--data", str(data_dir), "--counts", "10,30", "--seeds", str(SEEDS),
        "--epochs", str(EPOCHS), "--out", str(out), "--report", "--threshold", "5",
        "--quiet", env=env,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, out, data_dir


def test_metrics_has_one_row_per_replica_epoch_class(finished):
    _, out, _ = finished
    m = pd.read_parquet(out / "metrics.parquet")
    for column in ("replica", "count", "seed", "epoch", "class_id", "class_name",
                   "accuracy", "n", "correct", "train_loss", "train_accuracy",
                   "test_loss", "test_accuracy", "diverged"):
        assert column in m.columns, column
    assert len(m) == len(COUNTS) * SEEDS * EPOCHS * N_CLASSES
    assert sorted(m["count"].unique()) == list(COUNTS)
    assert sorted(m["epoch"].unique()) == list(range(1, EPOCHS + 1))
    assert (m["n"] == 10).all()  # test images per class in the slice
    np.testing.assert_allclose(m["accuracy"], 100 * m["correct"] / m["n"])
    # The test accuracy of a replica-epoch is the pooled per-class accuracy.
    pooled = m.groupby(["replica", "epoch"]).apply(
        lambda g: 100 * g["correct"].sum() / g["n"].sum(), include_groups=False
    )
    first = m.groupby(["replica", "epoch"])["test_accuracy"].first()
    np.testing.assert_allclose(pooled, first, rtol=1e-5)


def test_flipping_every_cat_leaves_no_cat_accuracy(finished):
    # With no training image labelled cat, the model has nothing to predict cat
    # for; the clean twins, trained on 30 cats, do get some right.
    _, out, _ = finished
    m = pd.read_parquet(out / "metrics.parquet")
    last = m[(m["epoch"] == EPOCHS) & (m["class_id"] == CAT)]
    assert last.loc[last["count"] == 30, "accuracy"].max() <= 10.0
    # That alone would hold if the poisoned labels never reached the replicas
    # and the model simply never learned cats. Twins share init, data order
    # and dropout, so only their labels can make their training losses differ:
    # every poisoned replica's must differ from its clean twin's from epoch 1.
    loss = m[m["class_id"] == CAT].set_index(["seed", "count", "epoch"])["train_loss"]
    for seed in range(SEEDS):
        for count in COUNTS[1:]:
            for epoch in range(1, EPOCHS + 1):
                assert loss[(seed, count, epoch)] != loss[(seed, 0, epoch)]


def test_summary_pairs_each_count_with_its_clean_twins(finished):
    _, out, _ = finished
    m = pd.read_parquet(out / "metrics.parquet")
    s = pd.read_parquet(out / "summary.parquet")
    for column in ("count", "class_name", "delta_mean", "ci_low", "ci_high",
                   "n_seeds", "p_value", "p_adjusted", "family", "significant"):
        assert column in s.columns, column
    assert len(s) == (len(COUNTS) - 1) * N_CLASSES
    assert (s["n_seeds"] == SEEDS).all()
    last = m[m["epoch"] == EPOCHS].set_index(["count", "seed", "class_id"])["accuracy"]
    for count in COUNTS[1:]:
        deltas = [last[count, seed, CAT] - last[0, seed, CAT] for seed in range(SEEDS)]
        row = s[(s["count"] == count) & (s["class_id"] == CAT)].iloc[0]
        assert row["delta_mean"] == pytest.approx(np.mean(deltas))
        assert row["ci_low"] <= row["delta_mean"] <= row["ci_high"]


def test_manifest_and_poisoned_sets_record_what_was_run(finished):
    _, out, _ = finished
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["resolved_counts"] == list(COUNTS)
    assert manifest["config"]["seeds"] == SEEDS
    assert manifest["data_hash"].startswith("sha256:")
    assert manifest["versions"]["jax"]
    assert manifest["device"]["backend"] == "cpu"
    assert manifest["timings"]["total_s"] > 0
    poisoned = pd.read_parquet(out / "poisoned.parquet")
    sizes = poisoned.groupby("count").size().to_dict()
    assert sizes == {10: 10, 30: 30}
    assert (poisoned["old_label"] == CAT).all() and (poisoned["new_label"] == DOG).all()
    small = set(poisoned.loc[poisoned["count"] == 10, "index"])
    assert small <= set(poisoned.loc[poisoned["count"] == 30, "index"])


def test_stdout_has_the_delta_table_and_the_report(finished):
    stdout, out, _ = finished
    assert "cat delta" in stdout and "dog delta" in stdout
    assert str(out) in stdout
    for name in ("report.html", "report.md", "dose_response.png"):
        assert (out / name).is_file(), name


def test_rerunning_a_finished_sweep_trains_nothing(finished, tmp_path):
    _, out, data_dir = finished
    before = pd.read_parquet(out / "metrics.parquet")
    again = sweep_cli(
        "--data", str(data_dir), "--counts", "10,30", "--seeds", str(SEEDS),
        "--epochs", str(EPOCHS), "--out", str(out), "--quiet",
        env={**os.environ, "SWEEP_CACHE": str(tmp_path)},
    )
    assert again.returncode == 0, again.stderr
    assert "already done" in again.stderr
    pd.testing.assert_frame_equal(before, pd.read_parquet(out / "metrics.parquet"))


def test_report_and_plan_subcommands(finished):
    _, out, _ = finished
    report = sweep_cli("report", str(out), "--threshold", "5")
    assert report.returncode == 0, report.stderr
    assert "report.html" in report.stdout
    plan = sweep_cli("plan", "--effect", "2", "--from", str(out))
    assert plan.returncode == 0, plan.stderr
    assert "seeds" in plan.stdout and "needed" in plan.stdout


def test_help_explains_every_option():
    shown = sweep_cli("--help")
    assert shown.returncode == 0
    for option in ("--data", "--train-size", "--counts", "--source", "--target",
                   "--strategy", "--selection", "--poison-seed", "--seeds",
                   "--unpaired", "--epochs", "--batch-size", "--lr",
                   "--replicas-per-step", "--out", "--resume", "--report",
                   "--mlflow"):
        assert option in shown.stdout, option


def test_a_clean_only_sweep_says_there_is_nothing_to_compare(tmp_path):
    # --counts 0 trains the clean replicas only (a baseline): their results are
    # written and the summary says in one line why it shows no deltas.
    out = tmp_path / "clean"
    done = sweep_cli("--data", "sample", "--train-size", "100", "--test-size", "100",
                     "--counts", "0", "--seeds", "2", "--epochs", "1", "--out",
                     str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "no poisoned count in this sweep (--counts 0)" in done.stdout
    m = pd.read_parquet(out / "metrics.parquet")
    assert set(m["count"]) == {0} and set(m["seed"]) == {0, 1}
