"""MLflow tracking against a real local store: what a user finds after --mlflow.

One small sweep (200 images of the embedded sample, counts 0/5/20 x 2 seeds, 2
epochs) is run once as a real `python -m sweep --mlflow file:...` process; the
tests read the store back with an MlflowClient and compare it with the parquet
tables the sweep wrote.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

mlflow = pytest.importorskip("mlflow")

from sweep import data
from sweep.errors import SweepError  # noqa: E402
from sweep.report import mlflow_runs  # noqa: E402

pytestmark = pytest.mark.slow  # real sweeps logged to a real MLflow store

COUNTS = (0, 5, 20)
SEEDS = 2
EPOCHS = 2
CAT = 3


def small_sample(root: Path, n_train: int, n_test: int) -> Path:
    """The first n images per class of the embedded sample, as a parquet folder
    (few test images keep the per-epoch evaluation cheap)."""
    root.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        table = pq.read_table(data.sample_path() / f"{split}.parquet")
        labels = table.column("label").to_numpy()
        keep = np.concatenate([np.flatnonzero(labels == c)[:n] for c in range(10)])
        pq.write_table(table.take(keep), root / f"{split}.parquet")
    return root


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """(results folder, tracking URI, the CLI's stderr) of one logged sweep."""
    root = tmp_path_factory.mktemp("tracking")
    data_dir = small_sample(root / "data", 20, 5)
    out, uri = root / "results", "file:" + str(root / "mlruns")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_ALLOW_FILE_STORE", "MLFLOW_TRACKING_URI")}
    env["SWEEP_CACHE"] = str(root / "cache")
    done = subprocess.run(
        [sys.executable, "-m", "sweep", "--data", str(data_dir),
         "--counts", "5,20", "--seeds", str(SEEDS), "--epochs", str(EPOCHS),
         "--out", str(out), "--quiet", "--mlflow", uri],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert done.returncode == 0, done.stderr
    return out, uri, done.stderr


@pytest.fixture
def allow_file_store(monkeypatch):
    # MLflow 3 refuses to open a file store without this opt-out.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


def runs_of(uri: str) -> tuple[mlflow.MlflowClient, list, list]:
    """(client, parent runs, child runs) in the "sweep" experiment at uri."""
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(mlflow_runs.EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def copy_results(out: Path, to: Path) -> Path:
    """A copy of a results folder to alter (chunks left out: nothing reads them)."""
    return Path(shutil.copytree(out, to, ignore=shutil.ignore_patterns("chunks")))


def test_the_cli_says_where_it_logged(logged):
    out, uri, stderr = logged
    lines = [line for line in stderr.splitlines() if line.startswith("mlflow: ")]
    assert len(lines) == 1, stderr
    assert "logged sweep results as run" in lines[0]
    assert f"{len(COUNTS) * SEEDS} replica runs) in {uri}" in lines[0]
    # MLflow's own chatter (deprecations, INFO lines) stays out of the output.
    assert "Warning" not in stderr and "INFO" not in stderr, stderr


def test_parent_run_records_config_and_provenance(logged, allow_file_store):
    out, uri, _ = logged
    manifest = json.loads((out / "manifest.json").read_text())
    _, parents, _ = runs_of(uri)
    assert len(parents) == 1
    run = parents[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == manifest["sweep_id"]
    params, tags = run.data.params, run.data.tags
    assert params["epochs"] == str(EPOCHS)
    assert params["source"] == "cat" and params["source_class"] == "cat"
    assert params["target_class"] == "dog"
    assert params["counts"] == "5,20" and params["resolved_counts"] == "0,5,20"
    assert params["n_replicas"] == str(len(COUNTS) * SEEDS)
    assert params["versions.jax"] == manifest["versions"]["jax"]
    assert params["data.hash"] == manifest["data_hash"]
    for runtime in ("out", "report", "mlflow"):
        assert runtime not in params
    assert tags["data_hash"] == manifest["data_hash"]
    assert tags["poisoned_hash"] == manifest["poisoned_hash"]
    assert tags["fingerprint"] == manifest["fingerprint"]
    assert tags["sweep_id"] == manifest["sweep_id"]
    assert tags["device_backend"] == manifest["device"]["backend"]
    assert tags["results_dir"] == str(out.resolve())


def test_parent_metrics_are_the_summary(logged, allow_file_store):
    out, uri, _ = logged
    summary = pd.read_parquet(out / "summary.parquet")
    metrics = pd.read_parquet(out / "metrics.parquet")
    _, (run,), _ = runs_of(uri)
    logged_metrics = run.data.metrics
    for count in COUNTS[1:]:
        row = summary[(summary["count"] == count) & (summary["class_id"] == CAT)]
        row = row.iloc[0]
        for column, prefix in (("delta_mean", "delta"), ("ci_low", "ci_low"),
                               ("ci_high", "ci_high"), ("p_value", "p_value")):
            assert logged_metrics[f"{prefix}_cat_count_{count}"] == pytest.approx(
                row[column]), (column, count)
        assert f"delta_dog_count_{count}" in logged_metrics
    clean = metrics[(metrics["count"] == 0) & (metrics["epoch"] == EPOCHS)]
    assert logged_metrics["clean_accuracy"] == pytest.approx(
        clean.groupby("replica")["test_accuracy"].first().mean())
    assert logged_metrics["total_s"] > 0


def test_delta_series_is_a_dose_response(logged, allow_file_store):
    out, uri, _ = logged
    summary = pd.read_parquet(out / "summary.parquet")
    client, (run,), _ = runs_of(uri)
    history = client.get_metric_history(run.info.run_id, "delta_cat")
    cat = summary[summary["class_id"] == CAT].set_index("count")["delta_mean"]
    assert sorted(m.step for m in history) == list(COUNTS[1:])
    for m in history:
        assert m.value == pytest.approx(cat[m.step])


def test_tables_are_artifacts_of_the_parent(logged, allow_file_store):
    _, uri, _ = logged
    client, (run,), _ = runs_of(uri)
    names = {a.path for a in client.list_artifacts(run.info.run_id, "results")}
    for name in ("metrics.parquet", "summary.parquet", "manifest.json",
                 "confusion.parquet", "poisoned.parquet"):
        assert f"results/{name}" in names


def test_one_child_run_per_replica_with_its_curves(logged, allow_file_store):
    out, uri, _ = logged
    metrics = pd.read_parquet(out / "metrics.parquet")
    client, (parent,), children = runs_of(uri)
    assert len(children) == len(COUNTS) * SEEDS
    replicas = metrics.groupby("replica")[["count", "seed"]].first()
    seen = set()
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED"
        params = run.data.params
        replica = int(params["replica"])
        pair = (int(params["count"]), int(params["seed"]))
        assert pair == tuple(replicas.loc[replica])
        assert run.info.run_name == f"count={params['count']} seed={params['seed']}"
        seen.add(replica)
        rows = metrics[metrics["replica"] == replica]
        per_epoch = rows.groupby("epoch")["train_loss"].first()
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
        for m in history:
            assert m.value == pytest.approx(float(per_epoch[m.step]), rel=1e-6)
        cat = rows[rows["class_id"] == CAT].set_index("epoch")["accuracy"]
        for m in client.get_metric_history(run.info.run_id, "accuracy_cat"):
            assert m.value == pytest.approx(cat[m.step])
        assert "accuracy_dog" in run.data.metrics
    assert seen == set(replicas.index)


def test_logging_the_same_sweep_again_adds_no_run(logged, allow_file_store):
    out, uri, _ = logged
    _, parents, children = runs_of(uri)
    again = mlflow_runs.log_sweep(out, uri)
    run_id = parents[0].info.run_id
    assert again == f"sweep results already logged as run {run_id} in {uri}"
    _, parents_after, children_after = runs_of(uri)
    assert len(parents_after) == 1 and len(children_after) == len(children)


def test_no_uri_logs_where_mlflow_ui_looks(logged, tmp_path, monkeypatch):
    """`--mlflow` alone follows MLFLOW_TRACKING_URI, else MLflow's default store
    in the working folder (sqlite:///mlflow.db on MLflow 3)."""
    out, _, _ = logged
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "env-store").as_uri())
    line = mlflow_runs.log_sweep(out, "")
    uri = (tmp_path / "env-store").as_uri()
    assert f"in {uri}" in line
    # The file-store opt-out was only set while logging.
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    _, parents, children = runs_of(uri)
    assert len(parents) == 1 and len(children) == len(COUNTS) * SEEDS

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    default = mlflow_runs.resolve_uri("")
    assert default.split(":")[0] == mlflow.get_tracking_uri().split(":")[0]
    assert str(tmp_path) in default


def test_a_store_that_cannot_be_opened_stops_the_sweep_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SweepError, match="cannot use the MLflow store"):
        mlflow_runs.check_store("file:" + str(blocker / "mlruns"))


def test_a_diverged_replica_is_logged_and_tagged(logged, tmp_path, allow_file_store):
    out, _, _ = logged
    copy = copy_results(out, tmp_path / "diverged")
    metrics = pd.read_parquet(copy / "metrics.parquet")
    bad = metrics["replica"] == 1
    metrics.loc[bad, "train_loss"] = np.nan
    metrics.loc[bad & (metrics["epoch"] == EPOCHS), "test_loss"] = np.inf
    metrics.loc[bad, "diverged"] = True
    metrics.to_parquet(copy / "metrics.parquet")
    (copy / "report.md").write_text("# report\n")
    shutil.copy(copy / "metrics.parquet", copy / "figure.png")  # any file will do
    uri = "file:" + str(tmp_path / "mlruns")
    assert "logged sweep" in mlflow_runs.log_sweep(copy, uri)
    client, (parent,), children = runs_of(uri)
    assert parent.info.status == "FINISHED"
    (run,) = [r for r in children if r.data.params["replica"] == "1"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["diverged"] == "true" and run.data.params["diverged"] == "True"
    assert client.get_metric_history(run.info.run_id, "train_loss") == []
    test_loss = client.get_metric_history(run.info.run_id, "test_loss")
    assert [m.step for m in test_loss] == list(range(1, EPOCHS))
    assert all(math.isfinite(m.value) for m in test_loss)
    assert len(client.get_metric_history(run.info.run_id, "accuracy_cat")) == EPOCHS
    others = [r for r in children if r.data.params["replica"] != "1"]
    assert all("diverged" not in r.data.tags for r in others)
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert report == {"report/report.md", "report/figure.png"}


def test_a_failure_marks_the_runs_failed(logged, tmp_path, allow_file_store):
    out, _, _ = logged
    copy = copy_results(out, tmp_path / "corrupt")
    metrics = pd.read_parquet(copy / "metrics.parquet")
    metrics["seed"] = metrics["seed"].astype(float)
    metrics.loc[metrics["replica"] == 2, "seed"] = np.nan  # no int for its params
    metrics.to_parquet(copy / "metrics.parquet")
    uri = "file:" + str(tmp_path / "mlruns")
    with pytest.raises(SweepError) as error:
        mlflow_runs.log_sweep(copy, uri)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"logging to MLflow at {uri} failed: ")
    assert f"results are safe in {copy}" in message
    _, (parent,), children = runs_of(uri)
    assert parent.info.status == "FAILED"
    statuses = sorted(r.info.status for r in children)
    assert statuses == ["FAILED", "FINISHED", "FINISHED"]  # replicas 0, 1 were done
    # A failed logging is not "already logged": the next try logs afresh.
    assert "logged sweep" in mlflow_runs.log_sweep(out, uri)


def test_an_unfinished_sweep_is_refused(logged, tmp_path, allow_file_store):
    out, _, _ = logged
    copy = copy_results(out, tmp_path / "running")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["status"] = "running"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    uri = "file:" + str(tmp_path / "mlruns")
    with pytest.raises(SweepError, match="not complete"):
        mlflow_runs.log_sweep(copy, uri)
    assert not (tmp_path / "mlruns").exists()


def test_require_says_how_to_install_mlflow(monkeypatch):
    assert mlflow_runs.require() is mlflow
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now fails
    with pytest.raises(SweepError) as error:
        mlflow_runs.require()
    assert str(error.value) == (
        '--mlflow needs MLflow: pip install -e ".[mlflow]" (or pip install mlflow)'
    )


def test_the_module_imports_without_mlflow():
    code = ("import sys; sys.modules['mlflow'] = None; import sweep.report.mlflow_runs; "
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def run_cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_ALLOW_FILE_STORE", "MLFLOW_TRACKING_URI")}
    env["SWEEP_CACHE"] = str(cache)
    return subprocess.run([sys.executable, "-m", "sweep", *args, "--quiet"],
                          capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.slow
def test_an_attack_matrix_logs_each_pair(tmp_path, allow_file_store):
    """--pairs with --mlflow: each pair's confirmatory deltas grouped under the
    pair, one child run per replica named by its pair (the shared clean twins:
    "clean")."""
    data_dir = small_sample(tmp_path / "data", 20, 5)
    out, uri = tmp_path / "matrix", "file:" + str(tmp_path / "mlruns")
    done = run_cli("--data", str(data_dir), "--pairs", "cat:dog,truck:automobile",
                   "--counts", "4", "--seeds", "2", "--epochs", "1", "--out", str(out),
                   "--mlflow", uri, cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    summary = pd.read_parquet(out / "summary.parquet")
    _, (parent,), children = runs_of(uri)
    assert parent.data.params["pairs"] == "cat:dog,truck:automobile"
    logged = parent.data.metrics
    for source, target, class_id, key in (
            (3, 5, 3, "cat_to_dog/delta_cat_count_4"),
            (3, 5, 5, "cat_to_dog/delta_dog_count_4"),
            (9, 1, 1, "truck_to_automobile/delta_automobile_count_4")):
        row = summary[(summary["source"] == source) & (summary["target"] == target)
                      & (summary["count"] == 4) & (summary["class_id"] == class_id)]
        assert logged[key] == pytest.approx(row["delta_mean"].iloc[0])
    # Only a pair's own source and target are logged under it.
    assert "cat_to_dog/delta_truck_count_4" not in logged
    assert len(children) == 2 * (1 + 2)
    names = sorted(run.info.run_name for run in children)
    assert names == sorted(["clean count=0 seed=0", "clean count=0 seed=1",
                            "cat:dog count=4 seed=0", "cat:dog count=4 seed=1",
                            "truck:automobile count=4 seed=0",
                            "truck:automobile count=4 seed=1"])
    cat_dog = next(run for run in children if run.info.run_name.startswith("cat:dog"))
    assert {"accuracy_cat", "accuracy_dog"} <= set(cat_dog.data.metrics)
    assert "accuracy_truck" not in cat_dog.data.metrics


@pytest.mark.slow
def test_a_head_sweep_logs_like_a_cnn_sweep(tmp_path, allow_file_store):
    """--model head with --mlflow: the same parent/child layout, the head's
    classes as source and target, the backbone recorded."""
    data_dir = small_sample(tmp_path / "data", 20, 5)
    out, uri = tmp_path / "head", "file:" + str(tmp_path / "mlruns")
    done = run_cli("--model", "head", "--backbone", "simplecnn", "--pooling", "avg",
                   "--data", str(data_dir), "--classes", "cat,dog", "--counts", "2,4",
                   "--seeds", "3", "--epochs", "2", "--out", str(out), "--mlflow", uri,
                   cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    summary = pd.read_parquet(out / "summary.parquet")
    _, (parent,), children = runs_of(uri)
    params = parent.data.params
    assert params["model"] == "head" and params["backbone"] == "simplecnn"
    assert (params["source_class"], params["target_class"]) == ("cat", "dog")
    row = summary[(summary["count"] == 4) & (summary["class_name"] == "cat")].iloc[0]
    assert parent.data.metrics["delta_cat_count_4"] == pytest.approx(row["delta_mean"])
    assert len(children) == manifest["n_replicas"] == 3 * 3
    assert {"accuracy_cat", "accuracy_dog", "train_loss"} <= set(
        children[0].data.metrics)
