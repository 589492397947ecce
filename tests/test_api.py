"""The Python API: `sweep.run(...)`, `sweep.load(path)` and the results object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

import sweep
from sweep import api
from sweep.cli.main import config_from, run_parser
from sweep.errors import SweepError

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(data="sample", train_size=300, counts=[5, 20], seeds=2, epochs=1)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "results"
    return sweep.run(out=out, progress=False, **TINY)


@pytest.mark.slow
def test_run_returns_the_folder_tables_and_manifest(finished):
    res = finished
    assert isinstance(res, api.Results)
    for name in ("metrics", "summary", "confusion", "poisoned"):
        table = getattr(res, name)
        assert isinstance(table, pd.DataFrame) and len(table)
        on_disk = pd.read_parquet(res.path / f"{name}.parquet")
        pd.testing.assert_frame_equal(table, on_disk)
    assert res.manifest == json.loads((res.path / "manifest.json").read_text())
    assert res.manifest["resolved_counts"] == [0, 5, 20]
    assert res.manifest["status"] == "complete"
    assert "cat->dog" in repr(res)


@pytest.mark.slow
def test_figures_are_matplotlib_figures_and_report_writes_the_html(finished):
    res = sweep.load(finished.path)
    figures = res.figures()
    assert {"dose_response", "class_accuracy", "training_curves"} <= set(figures)
    assert all(isinstance(f, Figure) for f in figures.values())
    dose = res.plot_dose_response()
    assert isinstance(dose, Figure) and len(dose.axes) >= 2
    path = res.report()
    assert path == res.path / "report.html" and path.exists()
    assert (res.path / "dose_response.png").exists()


@pytest.mark.slow
def test_load_reads_the_same_tables_and_refuses_a_non_sweep(finished, tmp_path):
    again = sweep.load(finished.path)
    pd.testing.assert_frame_equal(again.metrics, finished.metrics)
    with pytest.raises(SweepError, match="not a sweep results folder"):
        sweep.load(tmp_path)


@pytest.mark.parametrize("kwargs, argv", [
    (dict(data="sample", counts=[100, 300], seeds=4, epochs=3),
     ["--data", "sample", "--counts", "100,300", "--seeds", "4", "--epochs", "3"]),
    (dict(counts="1,5%", train_size=500, unpaired=True, dtype="bfloat16",
          source="3", optimizer="clip_by_global_norm(1.0), adam", out=Path("x")),
     ["--counts", "1,5%", "--train-size", "500", "--unpaired", "--dtype", "bfloat16",
      "--source", "3", "--optimizer", "clip_by_global_norm(1.0), adam", "--out", "x"]),
    (dict(counts=50, poison_per_seed=True, selection="first", lr=0.01, report=True),
     ["--counts", "50", "--poison-per-seed", "--selection", "first", "--lr", "0.01",
      "--report"]),
])
def test_keyword_arguments_mean_what_the_command_line_options_mean(kwargs, argv):
    from_api = api.config_of(**kwargs)
    from_cli = config_from(run_parser().parse_args(argv))
    assert from_api == from_cli
    assert from_api.fingerprint() == from_cli.fingerprint()  # the same folder


def test_unknown_and_bad_options_are_one_line_errors():
    with pytest.raises(SweepError, match="unknown option 'seed'; did you mean 'seeds'"):
        sweep.run(seed=3)
    with pytest.raises(SweepError, match="--seeds must be at least 1"):
        sweep.run(seeds=0)


@pytest.mark.slow
def test_the_notebook_example_runs(tmp_path):
    env = {**os.environ, "SWEEP_EXAMPLE_QUICK": "1", "MPLBACKEND": "Agg"}
    out = tmp_path / "example"
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "notebook.py"),
                           str(out)], env=env, capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (out / "report.html").exists()
    assert (out / "example_dose_response.png").exists()
    assert "dose_response" in done.stdout
