"""Backdoor sweeps end to end on the embedded sample, through the command line
and the Python API: the tables, the printed summary, verify, MLflow, and the
clean twin that trains bit for bit as a label-flip sweep's clean replica.

Small: 300 training images (30 a class), 1 epoch, 3 replicas per step, in one
process so the compiled programs are shared between sweeps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sweep
from sweep import data as data_lib
from sweep import stats
from sweep.cli.main import main
from sweep.experiment.running import perturbation

AIRPLANE, CAT, DOG = 0, 3, 5
COMMON = ["--data", "sample", "--train-size", "300", "--seeds", "2", "--epochs", "1",
          "--replicas-per-step", "3", "--quiet"]
# The count-0 replicas' columns a label-flip sweep has too.
SHARED = ["replica", "count", "seed", "epoch", "class_id", "correct", "n", "accuracy",
          "train_loss", "train_accuracy", "test_loss", "test_accuracy", "diverged"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("backdoor")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SWEEP_CACHE", str(root / "cache"))
        mp.setenv("SWEEP_NO_TFDS", "1")
        mp.delenv("SWEEP_DATA", raising=False)
        yield root


@pytest.fixture(scope="module")
def badnets(root):
    out = root / "badnets"
    assert main([*COMMON, "--out", str(out), "--attack", "badnets", "--target",
                 "airplane", "--counts", "2%,10%"]) == 0
    return out


@pytest.fixture(scope="module")
def flip(root):
    """A label-flip sweep with the same grid layout: 3 counts x 2 seeds."""
    out = root / "flip"
    assert main([*COMMON, "--out", str(out), "--counts", "6,30"]) == 0
    return out


def clean_rows(out: Path) -> pd.DataFrame:
    m = pd.read_parquet(out / "metrics.parquet")
    return m.loc[m["count"] == 0, SHARED].reset_index(drop=True)


def test_a_badnets_sweep_writes_asr_per_replica_and_epoch(badnets):
    manifest = json.loads((badnets / "manifest.json").read_text())
    attack = manifest["attack"]
    assert (attack["name"], attack["target_id"], attack["source_id"]) == (
        "badnets", AIRPLANE, -1)
    assert manifest["resolved_counts"] == [0, 6, 30]
    m = pd.read_parquet(badnets / "metrics.parquet")
    assert {"asr", "robust_accuracy", "n_stamped", "stamped_correct",
            "stamped_to_target"} <= set(m.columns)
    n_test = m.groupby("class_id")["n"].first()
    assert (m["n_stamped"] == n_test.drop(AIRPLANE).sum()).all()
    per_replica = m.groupby("replica").first()
    assert per_replica["asr"].between(0, 100).all()
    # asr is the stamped non-airplane images predicted airplane, from the rows.
    for _, rows in m.groupby("replica"):
        others = rows[rows["class_id"] != AIRPLANE]
        expect = 100 * others["stamped_to_target"].sum() / others["n"].sum()
        assert rows["asr"].iloc[0] == pytest.approx(expect)
    # The heaviest poisoning works even in one epoch on 300 images.
    assert per_replica.loc[per_replica["count"] == 30, "asr"].min() > 50
    poisoned = pd.read_parquet(badnets / "poisoned.parquet")
    assert (poisoned["new_label"] == AIRPLANE).all()
    assert (poisoned["old_label"] != AIRPLANE).all()
    assert sorted(poisoned.groupby("count").size().tolist()) == [6, 30]


def test_a_backdoor_summary_has_asr_and_the_target_as_confirmatory(badnets):
    summary = pd.read_parquet(badnets / "summary.parquet")
    confirmatory = summary[summary["family"] == "confirmatory"]
    assert set(confirmatory["class_id"]) == {stats.ASR_CLASS_ID, AIRPLANE}
    asr_rows = summary[summary["class_id"] == stats.ASR_CLASS_ID].sort_values("count")
    assert (asr_rows["class_name"] == stats.ASR_CLASS_NAME).all()
    assert asr_rows["count"].tolist() == [6, 30]
    # ASR in the source's place of the two-sequence rule, the target beside it.
    target = confirmatory[confirmatory["class_id"] == AIRPLANE].sort_values("count")
    expect_asr, expect_target = stats.confirmatory_adjusted(
        asr_rows["p_value"].to_numpy(), target["p_value"].to_numpy())
    np.testing.assert_allclose(asr_rows["p_adjusted"], expect_asr)
    np.testing.assert_allclose(target["p_adjusted"], expect_target)
    # The ASR delta's interval is the paired bootstrap-t's, around its mean.
    assert (asr_rows["ci_low"] <= asr_rows["delta_mean"]).all()
    assert (asr_rows["delta_mean"] <= asr_rows["ci_high"]).all()
    # Sources of an all-to-one attack and the clean-accuracy cost: exploratory.
    assert set(summary.loc[summary["family"] != "confirmatory", "class_id"]) == (
        set(range(10)) - {AIRPLANE}) | {stats.CLEAN_ACCURACY_ID}
    cost = summary[summary["class_id"] == stats.CLEAN_ACCURACY_ID]
    m = pd.read_parquet(badnets / "metrics.parquet").groupby("replica").first()
    for r in cost.itertuples():
        deltas = (m[m["count"] == r.count].set_index("seed")["test_accuracy"]
                  - m[m["count"] == 0].set_index("seed")["test_accuracy"])
        assert r.delta_mean == pytest.approx(deltas.mean())


def test_the_empty_mask_twin_is_the_flip_sweep_s_clean_replica(badnets, flip):
    pd.testing.assert_frame_equal(clean_rows(badnets), clean_rows(flip),
                                  check_exact=True)
    b = pd.read_parquet(badnets / "confusion.parquet")
    f = pd.read_parquet(flip / "confusion.parquet")
    cols = ["replica", "epoch", "true_id", "pred_id", "n"]
    pd.testing.assert_frame_equal(b.loc[b["count"] == 0, cols].reset_index(drop=True),
                                  f.loc[f["count"] == 0, cols].reset_index(drop=True))


def test_the_summary_verify_and_the_report(badnets, capsys):
    from sweep.cli import console

    console.print_summary(badnets)
    printed = capsys.readouterr().out
    assert "badnets backdoor into airplane" in printed
    assert "1800 stamped test images of every class but airplane" in printed
    assert [line.split()[0] for line in printed.splitlines()
            if line.strip()[:2] in ("0 ", "6 ", "30")] == ["0", "6", "30"]
    assert main(["verify", str(badnets), "--data", "sample"]) == 0
    verified = capsys.readouterr().out
    assert "ok   trigger hash" in verified and "ok   stamps" in verified
    # The mean ASR interval and the threshold question, one line each.
    assert "mean over seeds [95% CI]" in printed
    assert sum(line.startswith("ASR >= ") for line in printed.splitlines()) == 2
    asr_table = pd.read_parquet(badnets / "asr.parquet")
    assert asr_table["count"].tolist() == [0, 6, 30]
    assert (asr_table["asr_low"] <= asr_table["asr_mean"]).all()
    assert (asr_table["asr_mean"] <= asr_table["asr_high"]).all()
    thresholds = pd.read_parquet(badnets / "asr_thresholds.parquet")
    assert thresholds["threshold"].tolist() == [50.0, 90.0]
    assert main(["report", str(badnets)]) == 0
    report = (badnets / "report.md").read_text()
    assert "BackdoorBench ASR % (1 seed)" in report and "95.03" in report
    assert "mean ASR % [CI]" in report and "clean-acc cost" in report
    for name in ("asr_dose_response.png", "clean_cost.png", "stamped_examples.png"):
        assert (badnets / name).stat().st_size > 1000, name
    # The report's rewritten summary is still the one verify recomputes.
    assert main(["verify", str(badnets), "--data", "sample"]) == 0


def test_verify_catches_a_changed_stamped_set(badnets, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in badnets.iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    poisoned = pd.read_parquet(copy / "poisoned.parquet")
    poisoned.loc[0, "index"] = int(np.setdiff1d(np.arange(300),
                                                poisoned["index"])[0])
    poisoned.to_parquet(copy / "poisoned.parquet")
    assert main(["verify", str(copy), "--data", "sample"]) == 1
    out = capsys.readouterr().out
    assert "FAIL poisoned.parquet" in out and "FAIL stamps" in out


def test_the_python_api_runs_a_blend_sweep(root):
    res = sweep.run(attack="blend", data="sample", train_size=300, counts=["5%"],
                    seeds=1, epochs=1, blend_alpha=0.3, out=root / "blend",
                    progress=False, replicas_per_step=2)
    assert res.manifest["attack"]["trigger"] == {"kind": "blend", "alpha": 0.3,
                                                 "seed": 0}
    assert "all->dog" in repr(res)
    assert set(res.metrics["count"]) == {0, 15} and "asr" in res.metrics


def test_mlflow_logs_the_attack_success(badnets, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from sweep.report import mlflow_runs

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = "file:" + str(tmp_path / "mlruns")
    mlflow_runs.log_sweep(badnets, uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(mlflow_runs.EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    table = stats.asr_by_count(pd.read_parquet(badnets / "metrics.parquet"))
    for r in table.itertuples():
        assert parent.data.metrics[f"asr_count_{r.count}"] == pytest.approx(r.asr_mean)
    assert parent.data.params["source_class"] == "all"
    assert parent.data.params["target_class"] == "airplane"
    history = client.get_metric_history(children[0].info.run_id, "asr")
    assert len(history) == 1 and 0 <= history[0].value <= 100


@pytest.fixture(scope="module")
def clean_label(root):
    """The clean-label attack with its perturbation and without, same grid."""
    outs = {}
    for name, extra in (("perturbed", []), ("plain", ["--no-perturbation"])):
        outs[name] = root / f"clean-label-{name}"
        assert main([*COMMON, "--out", str(outs[name]), "--attack", "clean-label",
                     "--counts", "10,20", *extra]) == 0
    return outs


@pytest.mark.slow  # two clean-label sweeps and a surrogate (about a minute)
def test_clean_label_with_and_without_its_perturbation(clean_label, root):
    perturbed, plain = clean_label["perturbed"], clean_label["plain"]
    stored = perturbation.read(perturbed / perturbation.PERTURBED)
    assert not (plain / perturbation.PERTURBED).exists()
    manifest = json.loads((perturbed / "manifest.json").read_text())
    info = manifest["attack"]["perturbation"]
    assert info["eps_levels"] == 8 and info["n_perturbed"] == 20
    assert info["perturbed_hash"] == perturbation.perturbed_hash(stored.index,
                                                                 stored.images)
    poisoned = pd.read_parquet(perturbed / "poisoned.parquet")
    assert (poisoned["old_label"] == DOG).all() and (poisoned["new_label"] == DOG).all()
    np.testing.assert_array_equal(stored.index, np.sort(
        poisoned.loc[poisoned["count"] == 20, "index"]))
    # The copies moved, within 8 levels of the originals.
    ds = data_lib.load("sample")
    rows = data_lib.balanced_subset(ds.train_labels, 300, seed=0)
    originals = ds.train_images[rows][stored.index].astype(int)
    moved = np.abs(stored.images.astype(int) - originals)
    assert moved.max() <= 8 and (moved > 0).mean() > 0.5
    # The clean twins are the same model in both sweeps; the poisoned ones differ.
    pd.testing.assert_frame_equal(clean_rows(perturbed), clean_rows(plain),
                                  check_exact=True)
    a = pd.read_parquet(perturbed / "metrics.parquet")
    b = pd.read_parquet(plain / "metrics.parquet")
    assert not a.loc[a["count"] > 0, "train_loss"].equals(
        b.loc[b["count"] > 0, "train_loss"])
    assert "asr" in a and "asr" in b


@pytest.mark.slow  # two clean-label sweeps and a surrogate (about a minute)
def test_verify_checks_the_perturbed_copies(clean_label, tmp_path, capsys):
    perturbed = clean_label["perturbed"]
    assert main(["verify", str(perturbed), "--data", "sample"]) == 0
    assert "ok   perturbed.npz: 20 perturbed images" in capsys.readouterr().out
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in perturbed.iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    stored = perturbation.read(copy / perturbation.PERTURBED)
    images = stored.images.copy()
    images[0, 0, 0, 0] ^= 1
    perturbation.write(copy / perturbation.PERTURBED, stored._replace(images=images))
    assert main(["verify", str(copy), "--data", "sample"]) == 1
    assert "FAIL perturbed.npz: hash" in capsys.readouterr().out


@pytest.mark.slow  # two clean-label sweeps and a surrogate (about a minute)
def test_the_surrogate_is_cached(clean_label, root):
    manifest = json.loads((clean_label["perturbed"] / "manifest.json").read_text())
    surrogate = manifest["attack"]["perturbation"]["surrogate"]
    assert Path(surrogate["file"]).is_file()
    assert Path(surrogate["file"]).parent == Path(os.environ["SWEEP_CACHE"]) / (
        "surrogates")
    out = root / "clean-label-again"
    assert main([*COMMON, "--out", str(out), "--attack", "clean-label", "--counts",
                 "10,20", "--seeds", "1"]) == 0
    again = json.loads((out / "manifest.json").read_text())["attack"]["perturbation"]
    assert again["surrogate"]["cached"] is True
    assert again["perturbed_hash"] == manifest["attack"]["perturbation"][
        "perturbed_hash"]
