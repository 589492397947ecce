"""The attack matrix: shared clean twins, per-pair summaries, one pair = a sweep.

Small real sweeps on a slice of the shared CIFAR-10 (20 train / 5 test images a
class), 1 epoch, one replica per step so every replica trains alone and the
comparisons can be exact.
"""

from __future__ import annotations

import pandas as pd
import pytest

from sweep import results, stats
from sweep.errors import SweepError
from sweep.experiment import config as config_lib
from sweep.experiment import prepare as prepare_lib
from sweep.experiment.attacks import attack_pairs
from sweep.experiment.config import Config
from sweep.experiment.running import run_sweep
from tests.fixtures_data import shared_slice, write_parquet_dataset


def test_grid_one_pair_is_the_old_layout():
    grid = prepare_lib.Grid(counts=(0, 5, 20), seeds=(3, 4), paired=True)
    old = [(seed, count) for seed in (3, 4) for count in (0, 5, 20)]
    assert [grid.replica(i) for i in range(grid.size)] == old
    unpaired = prepare_lib.Grid(counts=(0, 5, 20), seeds=(3, 4), paired=False)
    assert [unpaired.stream(i) for i in range(6)] == [1, 6, 21, 1, 6, 21]


def test_grid_shares_one_clean_replica_per_seed():
    grid = prepare_lib.Grid(counts=(0, 5, 20), seeds=(0, 1), paired=False, n_pairs=3)
    cells = [grid.cell(i) for i in range(grid.size)]
    assert grid.size == 2 * (1 + 3 * 2)
    assert [c for c in cells if c[1] == -1] == [(0, -1, 0), (1, -1, 0)]
    for seed in (0, 1):
        for pair in range(3):
            assert [c[2] for c in cells if c[:2] == (seed, pair)] == [5, 20]
    # Unpaired replicas of one seed all get distinct key streams.
    streams = [grid.stream(i) for i in range(grid.per_seed)]
    assert len(set(streams)) == len(streams)


def test_pairs_parse_and_resolve():
    names = ("airplane", "automobile", "bird")
    assert attack_pairs.resolve_pairs(("bird:airplane", "1:2"), "x", "y", names) == (
        (2, 0), (1, 2))
    assert len(attack_pairs.resolve_pairs(("all",), "x", "y", names)) == 6
    assert attack_pairs.resolve_pairs(None, "bird", "automobile", names) == ((2, 1),)
    for bad in (("bird",), ("bird:bird",), ("all", "bird:airplane"), ("a:b:c",)):
        with pytest.raises(SweepError):
            config_lib.parse_pairs(bad)
    with pytest.raises(SweepError, match="repeats"):
        attack_pairs.resolve_pairs(("bird:airplane", "2:0"), "x", "y", names)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_parquet_dataset(tmp_path_factory.mktemp("matrix") / "data",
                                 shared_slice(20, 5))


def sweep(data_dir, out, **changes) -> pd.DataFrame:
    config = Config(data=str(data_dir), counts=("4",), seeds=2, epochs=1,
                    replicas_per_step=1, out=str(out), **changes)
    run_sweep.run(config, log=lambda s: None)
    return out


@pytest.mark.slow
def test_matrix_shares_clean_twins_and_summarizes_per_pair(data_dir, tmp_path):
    out = sweep(data_dir, tmp_path / "m", pairs=("cat:dog", "truck:automobile"))
    metrics = pd.read_parquet(out / "metrics.parquet")
    replicas = metrics.drop_duplicates("replica")
    # 2 seeds x (1 shared clean + 2 pairs x 1 count): no duplicated clean twins.
    assert len(replicas) == 6
    clean = replicas[replicas["count"] == 0]
    assert sorted(clean["seed"]) == [0, 1]
    assert (clean["source"] == results.CLEAN).all() and (clean["target"] == -1).all()
    assert set(map(tuple, replicas.loc[replicas["count"] > 0, ["source", "target"]]
                   .to_numpy().tolist())) == {(3, 5), (9, 1)}
    summary = pd.read_parquet(out / "summary.parquet")
    assert list(summary.columns[:2]) == ["source", "target"]
    assert len(summary) == 2 * 10  # pairs x classes at the one count
    poisoned = pd.read_parquet(out / "poisoned.parquet")
    assert set(poisoned["source"]) == {3, 9}
    # The report draws the heatmaps and ranks both pairs.
    from sweep.report import write as report

    html = report.write_report(out)
    assert (out / "matrix_source.png").stat().st_size > 0
    text = (out / "report.md").read_text()
    assert "cat -> dog" in text and "truck -> automobile" in text
    assert html.name == "report.html"
    from sweep.cli.main import main

    assert main(["report", str(out)]) == 0  # the CLI: no one-pair headlines to print


@pytest.mark.slow
def test_verify_checks_a_matrix_folder(data_dir, tmp_path, capsys):
    """verify rebuilds every pair's poisoned sets and the matrix grid's cells; a
    pair's set altered on disk fails, naming the pair."""
    from sweep.cli.main import main

    out = sweep(data_dir, tmp_path / "m", pairs=("cat:dog", "truck:automobile"))
    assert main(["verify", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ok   poisoned.parquet: the configuration's 2 poisoned set(s)" in text
    assert "ok   grid (classes, counts, seeds)" in text
    assert "exactly the grid's 6 (pair, count, seed) cells" in text
    poisoned = pd.read_parquet(out / "poisoned.parquet")
    gone = poisoned.index[poisoned["source"] == 9][0]
    poisoned.drop(index=gone).to_parquet(out / "poisoned.parquet")
    assert main(["verify", str(out)]) == 1
    fails = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("FAIL")]
    assert any("truck->automobile count 4 (1 index(es) differ" in ln for ln in fails)
    assert not any("cat->dog" in ln for ln in fails)


@pytest.mark.slow
def test_each_pair_equals_its_one_pair_sweep(data_dir, tmp_path):
    """A matrix's cat:dog summary is exactly a cat -> dog sweep's: same clean
    twins, same poisoned sets, same keys, and replicas trained alone."""
    m = sweep(data_dir, tmp_path / "m", pairs=("truck:automobile", "cat:dog"))
    one = sweep(data_dir, tmp_path / "one", source="cat", target="dog")
    as_pair = sweep(data_dir, tmp_path / "as_pair", pairs=("cat:dog",))
    numbers = ["count", "seed", "epoch", "class_id", "correct", "n", "accuracy",
               "train_loss", "test_loss"]
    a = pd.read_parquet(one / "metrics.parquet")
    b = pd.read_parquet(as_pair / "metrics.parquet")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    mm = stats.pair_slice(pd.read_parquet(m / "metrics.parquet"), 3, 5)
    pd.testing.assert_frame_equal(
        mm[numbers].reset_index(drop=True), a[numbers].reset_index(drop=True),
        check_exact=True)
    s_one = pd.read_parquet(one / "summary.parquet")
    s_m = pd.read_parquet(m / "summary.parquet")
    s_m = s_m[(s_m["source"] == 3) & (s_m["target"] == 5)].reset_index(drop=True)
    pd.testing.assert_frame_equal(s_m.drop(columns=["source", "target"]), s_one,
                                  check_exact=True)
    # A one-pair sweep's tables keep the columns they always had.
    assert "source" not in a.columns and "source" not in s_one.columns


def test_percent_counts_that_differ_per_pair_are_refused(tmp_path):
    import numpy as np

    from sweep import data
    from tests.fixtures_data import synthetic_dataset

    ds = synthetic_dataset(n_train_per_class=10, n_test_per_class=2)
    keep = np.r_[0:10, 10:15, 20:30]  # class_1 has 5 images, the others 10
    uneven = data.dataset_from_arrays(
        ds.train_images[keep], ds.train_labels[keep], ds.test_images,
        ds.test_labels, ds.class_names, source="synthetic")
    config = Config(data=str(write_parquet_dataset(tmp_path / "u", uneven)),
                    counts=("40%",), seeds=1, epochs=1, out=str(tmp_path / "o"),
                    pairs=("class_0:class_1", "class_1:class_0"))
    with pytest.raises(SweepError, match="absolute counts"):
        prepare_lib.prepare(config)
