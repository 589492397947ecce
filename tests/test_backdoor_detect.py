"""`python -m sweep detect` on a backdoor sweep, end to end on the embedded sample:
a blatant BadNets trigger (6x6) on 5% of 600 training images, 2 seeds, 1 epoch.

The same options also run as a plain sweep, whose replicas the detect run must
reproduce (ASR and clean accuracy), and whose stamped images are the truth the
detectors are graded against.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sweep.cli.main import main
from sweep.defences.detect import backdoor_tables

OPTIONS = ["--data", "sample", "--train-size", "600", "--seeds", "2", "--epochs", "1",
           "--replicas-per-step", "3", "--quiet", "--attack", "badnets", "--target",
           "airplane", "--trigger-size", "6", "--counts", "5%"]
COUNT = 30  # 5% of 600
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bddetect")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SWEEP_CACHE", str(root / "cache"))
        mp.setenv("SWEEP_NO_TFDS", "1")
        mp.delenv("SWEEP_DATA", raising=False)
        assert main(["detect", *OPTIONS, "--out", str(root / "detect")]) == 0
        assert main([*OPTIONS, "--out", str(root / "sweep")]) == 0
    return root / "detect", root / "sweep"


@pytest.mark.slow  # trains a sweep and its detect run (about a minute)
def test_tables_are_written_with_one_row_per_replica_and_detector(runs):
    out, _ = runs
    per_seed = pd.read_parquet(out / "detection_seeds.parquet")
    assert sorted(per_seed["count"].unique()) == [0, COUNT]
    assert len(per_seed) == 2 * len(SEEDS) * len(backdoor_tables.DETECTORS)
    summary = pd.read_parquet(out / "detection.parquet")
    auroc = summary[(summary["count"] == COUNT) & (summary["metric"] == "auroc")]
    assert set(auroc["detector"]) == set(backdoor_tables.DETECTORS)
    assert (auroc["n_seeds"] == len(SEEDS)).all()
    assert (auroc["ci_low"] <= auroc["mean"]).all()
    assert (auroc["mean"] <= auroc["ci_high"]).all()
    repair = pd.read_parquet(out / "repair.parquet")
    assert len(repair) == len(backdoor_tables.DETECTORS)
    for col in ("asr_poisoned", "asr_repaired", "asr_delta", "accuracy_delta"):
        assert repair[col].notna().all()
    report = (out / "report.md").read_text()
    assert "backdoor detection" in report and "repair by removal" in report


@pytest.mark.slow  # trains a sweep and its detect run (about a minute)
def test_detector_scores_are_graded_against_the_stamped_images(runs):
    out, sweep_out = runs
    suspects = pd.read_parquet(out / "backdoor_suspects.parquet")
    planted = pd.read_parquet(sweep_out / "poisoned.parquet")
    per_seed = pd.read_parquet(out / "detection_seeds.parquet")
    for (count, seed), g in suspects.groupby(["count", "seed"]):
        # Every image examined is labelled the target; every stamped one is among
        # them, and the truth is exactly the sweep's stamped set.
        stamped = set(g.loc[g["poisoned"], "index"])
        assert len(stamped) == count
        if count:
            assert stamped <= set(planted["index"])
        rows = per_seed[(per_seed["count"] == count) & (per_seed["seed"] == seed)]
        for _, r in rows.iterrows():
            metrics = [r[m] for m in backdoor_tables.METRICS if m != "n_flagged"]
            assert all(np.isnan(v) or 0 <= v <= 1 for v in metrics)
            assert r["n_flagged"] == g[f"{r['detector']}_flag"].sum()
            if count:
                # Spectral signatures remove ceil(1.5 epsilon) of the class
                # (ties at the cut all go), epsilon = the planted count.
                if r["detector"] == "spectral":
                    assert r["n_flagged"] >= math.ceil(1.5 * count)
                assert r["k"] == count and r["recall_at_k"] == r["precision_at_k"]
    # How well they separate is not asserted here: one epoch on 600 images can
    # leave a model that calls everything the target (tests/test_backdoor_detectors
    # checks each detector on a planted signal; README has a real run's numbers).
    assert per_seed.loc[per_seed["count"] == COUNT, "auroc"].notna().all()


@pytest.mark.slow  # trains a sweep and its detect run (about a minute)
def test_the_poisoned_replicas_are_the_sweeps(runs):
    out, sweep_out = runs
    cols = ["count", "seed", "epoch", "class_id", "correct", "accuracy",
            "test_accuracy", "asr", "n_stamped", "robust_accuracy"]
    ours = pd.read_parquet(out / "backdoor_metrics.parquet")[cols]
    theirs = pd.read_parquet(sweep_out / "metrics.parquet")[cols]
    key = ["count", "seed", "epoch", "class_id"]
    pd.testing.assert_frame_equal(ours.sort_values(key).reset_index(drop=True),
                                  theirs.sort_values(key).reset_index(drop=True))


@pytest.mark.slow  # trains a sweep and its detect run (about a minute)
def test_repair_removes_the_flagged_images_only(runs):
    out, _ = runs
    suspects = pd.read_parquet(out / "backdoor_suspects.parquet")
    repaired = pd.read_parquet(out / "repair_metrics.parquet")
    poisoned = pd.read_parquet(out / "backdoor_metrics.parquet")
    n_train = 600
    for (replica, det), r in repaired.groupby(["replica", "detector"]):
        g = suspects[suspects["replica"] == replica]
        flag = g[f"{det}_flag"].to_numpy(bool)
        assert (r["n_removed"] == flag.sum()).all()
        assert (r["n_poison_removed"] == (flag & g["poisoned"]).sum()).all()
        assert flag.sum() < n_train
        if not flag.any():  # nothing removed: the poisoned replica itself
            last = r[r["epoch"] == r["epoch"].max()]
            twin = poisoned[(poisoned["replica"] == replica)
                            & (poisoned["epoch"] == last["epoch"].iloc[0])]
            np.testing.assert_array_equal(last["correct"], twin["correct"])
    repair = pd.read_parquet(out / "repair.parquet")
    assert (repair["n_removed"] >= repair["n_poison_removed"]).all()
    assert (repair["asr_poisoned_low"] <= repair["asr_poisoned"]).all()


def test_backdoor_detect_refuses_a_flip_repair_detector(tmp_path, capsys):
    code = main(["detect", *OPTIONS, "--repair-with", "knn",
                 "--out", str(tmp_path / "x")])
    assert code == 2
    assert "--repair-with takes only none" in capsys.readouterr().err


@pytest.mark.slow  # trains a sweep and its detect run (about a minute)
def test_a_rerun_continues_from_the_chunks_and_refuses_other_options(
        runs, capsys, monkeypatch):
    out, _ = runs
    monkeypatch.setenv("SWEEP_CACHE", str(out.parent / "cache"))
    monkeypatch.setenv("SWEEP_NO_TFDS", "1")
    monkeypatch.delenv("SWEEP_DATA", raising=False)
    before = {name: pd.read_parquet(out / name) for name in
              ("detection_seeds.parquet", "repair.parquet",
               "backdoor_metrics.parquet")}
    chunks = sorted(p.name for p in (out / "chunks").glob("bd-*"))
    assert main(["detect", *OPTIONS, "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "chunks").glob("bd-*")) == chunks
    for name, table in before.items():
        pd.testing.assert_frame_equal(pd.read_parquet(out / name), table)
    capsys.readouterr()
    assert main(["detect", *OPTIONS, "--trigger-size", "5", "--out", str(out)]) == 2
    assert "holds a different detect run" in capsys.readouterr().err


@pytest.mark.slow  # trains a sweep and its detect run (about a minute)
def test_clean_label_replicas_read_their_perturbed_copies_as_the_sweep_does(
        tmp_path, monkeypatch):
    """Clean-label: the stamped images are perturbed copies stored after the
    training set (`Stamps.rows`); the detect run's replicas are the sweep's and
    its truth is the sweep's stamped target-class images, labels kept."""
    monkeypatch.setenv("SWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SWEEP_NO_TFDS", "1")
    monkeypatch.delenv("SWEEP_DATA", raising=False)
    options = ["--data", "sample", "--train-size", "300", "--seeds", "2", "--epochs",
               "1", "--replicas-per-step", "2", "--quiet", "--attack", "clean-label",
               "--target", "airplane", "--counts", "10"]
    out, sweep_out = tmp_path / "detect", tmp_path / "sweep"
    assert main(["detect", *options, "--repair-with", "none", "--out", str(out)]) == 0
    assert main([*options, "--out", str(sweep_out)]) == 0
    assert not (out / "repair.parquet").exists()
    cols = ["count", "seed", "epoch", "class_id", "correct", "asr", "n_stamped"]
    key = ["count", "seed", "epoch", "class_id"]
    ours = pd.read_parquet(out / "backdoor_metrics.parquet")[cols]
    theirs = pd.read_parquet(sweep_out / "metrics.parquet")[cols]
    pd.testing.assert_frame_equal(ours.sort_values(key).reset_index(drop=True),
                                  theirs.sort_values(key).reset_index(drop=True))
    suspects = pd.read_parquet(out / "backdoor_suspects.parquet")
    planted = pd.read_parquet(sweep_out / "poisoned.parquet")
    stamped = suspects[suspects["poisoned"]]
    assert set(stamped["index"]) == set(planted["index"])
    assert (stamped["true_label"] == 0).all()  # airplanes, labels kept
