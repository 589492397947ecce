"""`python -m sweep certify` end to end on the embedded CIFAR-10 sample.

One small run (240 training images, k = 4, DPA and Finite Aggregation with
d = 2, every aggregation, flips of 2 and 8 cats, 2 seeds, the undefended sweep
beside) answers most questions: which base models a flip retrains (checked
against the hash partition computed here), whether the reused ones are the
clean run's bit for bit (their parameter digests), whether the certificate's
promise holds on the attacks made, and whether the tables agree with each
other and with the sweep. The math itself is tests/test_certify_math.py; the
engine's isolation tests/test_isolated.py.
"""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweep.cli.main import main
from sweep.defences.certify import base_models, partition
from sweep.defences.certify.base_models import Scheme

ARGS = ["certify", "--partitions", "4", "--aggregation", "dpa,dpa-roe,fa,fa-roe",
        "--fa-copies", "2", "--counts", "2,8", "--seeds", "2", "--epochs", "1",
        "--batch-size", "32", "--replicas-per-step", "8", "--quiet"]
TABLES = ("certificates", "certified", "certified_seeds", "attack", "price",
          "models", "ensembles")


def sample_slice(n_train: int, n_test: int):
    """The first n images of every class of the embedded CIFAR-10 sample."""
    from sweep import data

    ds = data.load("sample")

    def take(labels, n):
        return np.concatenate([np.flatnonzero(labels == c)[:n] for c in range(10)])

    tr, te = take(ds.train_labels, n_train), take(ds.test_labels, n_test)
    return data.dataset_from_arrays(ds.train_images[tr], ds.train_labels[tr],
                                    ds.test_images[te], ds.test_labels[te],
                                    ds.class_names, source="sample-slice")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """240 training and 400 test images of the sample, as a parquet folder."""
    from tests.fixtures_data import write_parquet_dataset

    return write_parquet_dataset(tmp_path_factory.mktemp("data"),
                                 sample_slice(24, 40))


def cli_args(data_dir) -> list[str]:
    return [*ARGS, "--data", str(data_dir)]


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("certify") / "out"
    assert main([*cli_args(data_dir), "--out", str(out)]) == 0
    return out


def tables(out):
    return {name: pd.read_parquet(out / f"{name}.parquet") for name in TABLES}


def train_set(data_dir):
    """The run's training images and flipped rows, rebuilt from the sweep."""
    from sweep.experiment.config import Config
    from sweep.experiment.prepare import prepare

    return prepare(Config(data=str(data_dir), counts=("2", "8"), seeds=2, epochs=1,
                          batch_size=32))


@pytest.mark.slow  # shares a certify run that trains for a minute
def test_a_flip_retrains_only_the_models_of_its_bucket(run, data_dir):
    t = tables(run)
    p = train_set(data_dir)
    for seed in (0, 1):
        hashes = partition.image_hashes(p.train_images, seed=seed)
        for d in (1, 2):
            n = 4 * d
            buckets = (hashes % np.uint64(n)).astype(np.int64)
            shifts = partition.spread_shifts(4, d, seed=seed)
            for count in (2, 8):
                flipped = p.flipped[(count, -1)]
                touched = set(partition.models_of_bucket(shifts, n)[
                    buckets[flipped]].ravel().tolist())
                row = t["ensembles"][(t["ensembles"]["seed"] == seed)
                                     & (t["ensembles"]["d"] == d)
                                     & (t["ensembles"]["count"] == count)]
                assert int(row["n_retrained"].iloc[0]) == len(touched)
                assert int(row["n_flipped"].iloc[0]) == count
                models = t["models"][(t["models"]["seed"] == seed)
                                     & (t["models"]["d"] == d)
                                     & (t["models"]["count"] > 0)]
                # Every retrained model holds a flip; none of the others does.
                assert (models["n_flipped"] > 0).all()
                assert set(models[models["count"] <= count]["model"]) <= touched
    # One model per (seed, scheme, model) at count 0, and only touched ones after.
    clean = t["models"][t["models"]["count"] == 0]
    assert len(clean) == 2 * (4 + 8)


@pytest.mark.slow  # shares a certify run that trains for a minute
def test_the_certificate_holds_on_every_attack_made(run):
    t = tables(run)
    assert t["attack"]["bound_holds"].all()
    c = t["certificates"]
    key = ["k", "d", "method", "seed", "test_index"]
    clean = c[c["count"] == 0].set_index(key)
    for count in (2, 8):
        att = c[c["count"] == count].set_index(key)
        safe = clean["radius"] >= count
        assert (att.loc[safe[safe].index, "prediction"]
                == clean.loc[safe[safe].index, "prediction"]).all()
    # Radii are within what the models allow, and margins are non-negative.
    assert (c["radius"] >= 0).all() and (c["margin"] >= 0).all()
    assert (c["radius"] <= c["k"] * c["d"]).all()
    assert (c.loc[c["d"] == 1, "radius"] <= 2).all()  # DPA: floor(k / 2)
    assert set(c["method"]) == {"dpa", "dpa-roe", "fa", "fa-roe"}


@pytest.mark.slow  # shares a certify run that trains for a minute
def test_tables_agree_with_each_other_and_with_the_sweep(run):
    t = tables(run)
    curves, price, attack = t["certified"], t["price"], t["attack"]
    for method in ("dpa", "dpa-roe", "fa", "fa-roe"):
        at0 = curves[(curves["method"] == method) & (curves["radius"] == 0)
                     & (curves["class_id"] == -1)]["mean"].iloc[0]
        ens = price[(price["method"] == method)
                    & (price["class_id"] == -1)]["ensemble_mean"].iloc[0]
        assert at0 == pytest.approx(ens)
        clean = attack[(attack["method"] == method) & (attack["count"] == 0)
                       & (attack["class_id"] == -1)]
        assert clean["certified_mean"].iloc[0] == pytest.approx(ens)
    # Certified accuracy never grows with the radius, seed by seed.
    s = t["certified_seeds"].sort_values("radius")
    assert (s.groupby(["k", "d", "method", "class_id", "seed"])["certified_accuracy"]
            .diff().dropna() <= 0).all()
    # The undefended columns are the sweep's own last-epoch cat accuracies.
    metrics = pd.read_parquet(run / "sweep" / "metrics.parquet")
    last = metrics[metrics["epoch"] == metrics["epoch"].max()]
    for count in (0, 2, 8):
        want = last[(last["count"] == count) & (last["class_id"] == 3)]["accuracy"]
        got = attack[(attack["count"] == count) & (attack["class_id"] == 3)
                     & (attack["method"] == "dpa")]["undefended_mean"].iloc[0]
        assert got == pytest.approx(want.mean())


@pytest.mark.slow  # shares a certify run that trains for a minute
def test_an_interrupted_run_continues_and_chunks_do_not_change_a_model(
        run, data_dir, tmp_path):
    """A copy of the run with one chunk deleted, rerun with another chunk size:
    only the lost models train again, in other chunks, and they come back with
    the same parameter digests and the same tables."""
    out = tmp_path / "out"
    shutil.copytree(run, out)
    chunks = sorted((out / "chunks").glob("models-*.npz"))
    lost = chunks[0]
    with np.load(lost) as z:
        lost_ids = set(z["ids"].tolist())
    lost.unlink()
    for name in TABLES:
        (out / f"{name}.parquet").unlink()
    given = cli_args(data_dir)
    args = [a if a != "8" or prev != "--replicas-per-step" else "3"
            for prev, a in zip(["", *given], given)]
    assert main([*args, "--out", str(out)]) == 0
    again = tables(out)
    before = tables(run)
    new = set()
    kept = {c.name for c in chunks[1:]}
    for path in (out / "chunks").glob("models-*.npz"):
        if path.name not in kept:
            with np.load(path) as z:
                assert int(z["replicas"]) <= 3
                new |= set(z["ids"].tolist())
    assert new == lost_ids
    for name in ("certificates", "certified", "attack", "price", "ensembles"):
        pd.testing.assert_frame_equal(again[name], before[name], obj=name)
    m0 = before["models"].set_index("id")["params_sha256"]
    m1 = again["models"].set_index("id")["params_sha256"]
    assert (m1.loc[m0.index] == m0).all()


@pytest.mark.slow  # shares a certify run that trains for a minute
def test_report_and_api(run, data_dir):
    import sweep

    res = sweep.certify(data=str(data_dir), partitions=[4],
                        aggregation="dpa,dpa-roe,fa,fa-roe", fa_copies=2,
                        counts=[2, 8], seeds=2, epochs=1, batch_size=32,
                        out=run, log=lambda s: None)
    assert len(res.certificates) == len(pd.read_parquet(run / "certificates.parquet"))
    assert res.sweep is not None and set(res.figures()) == {"certified", "attack"}
    html = res.report()
    text = (run / "certify.md").read_text()
    assert html.exists() and "![" in text and "Published numbers" in text
    assert (run / "certified.png").stat().st_size > 10_000


@pytest.mark.parametrize("args, says", [
    (["--partitions", "1"], "--partitions must be distinct whole numbers >= 2"),
    (["--partitions", "4,4"], "--partitions must be distinct whole numbers >= 2"),
    (["--partitions", "four"], "--partitions takes whole numbers"),
    (["--aggregation", "magic"], "--aggregation must list some of"),
    (["--fa-copies", "1"], "--fa-copies must be at least 2"),
    (["--base-epochs", "0"], "--base-epochs must be at least 1"),
    (["--level", "95"], "--level must be in (0, 1)"),
    (["--pairs", "cat:dog"], "certify takes one --source/--target pair"),
    (["--attack", "badnets"], "certify covers label attacks (--attack flip or swap)"),
    (["--partitions", "100000", "--train-size", "500", "--counts", "5"],
     "base models (k=100000"),
])
def test_bad_certify_options_are_one_line_errors(args, says, capsys):
    assert main(["certify", "--data", "sample", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


def test_preference_ranks_keep_the_vote_and_break_ties_to_the_smaller_class():
    scores = np.array([[[0.5, 2.0, 2.0, -1.0], [1.0, 1.0, 1.0, 1.0]]])  # (1, 2, 4)
    ranks = base_models.preference_ranks(scores)
    np.testing.assert_array_equal(ranks, [[[1, 3, 2, 0], [3, 2, 1, 0]]])
    rng = np.random.default_rng(0)
    logp = rng.normal(size=(3, 50, 10)).round(1)  # rounding makes ties
    np.testing.assert_array_equal(base_models.preference_ranks(logp).argmax(-1),
                                  logp.argmax(-1))


def test_model_ids_see_only_their_own_labels():
    images = np.random.default_rng(1).integers(0, 256, (60, 4, 4, 3), np.uint8)
    labels = np.zeros(60, np.int32)
    lay = base_models.layout(images, Scheme(3, 1), seed=7)
    ids = base_models.ensemble_ids(lay, labels, 7, Scheme(3, 1))
    flipped = labels.copy()
    flipped[lay.index[1, 0]] = 5  # an image of model 1
    again = base_models.ensemble_ids(lay, flipped, 7, Scheme(3, 1))
    assert [a == b for a, b in zip(ids, again)] == [True, False, True]


@pytest.mark.slow
def test_a_killed_certify_run_continues_to_the_same_tables(run, data_dir, tmp_path):
    """The fixture's run again, killed (SIGKILL) once its first chunk of base
    models is on disk, then rerun: that chunk is kept, and the tables equal
    the uninterrupted run's."""
    import os
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    argv = [sys.executable, "-m", "sweep", *cli_args(data_dir), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 600
        while not list((out / "chunks").glob("models-*.npz")):
            assert proc.poll() is None, "the run ended before its first chunk"
            assert time.time() < deadline, "no chunk after 600 s"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    first = sorted((out / "chunks").glob("models-*.npz"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in first}
    assert not (out / "certificates.parquet").exists()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr
    kept = 0
    for p in first:
        assert p.stat().st_mtime_ns == mtimes[p.name]  # kept, not retrained
        with np.load(p) as z:
            kept += len(z["ids"])
    assert f"; {kept} on disk," in done.stderr
    for name in ("certificates", "certified", "attack", "price", "ensembles"):
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{name}.parquet"),
                                      pd.read_parquet(run / f"{name}.parquet"),
                                      obj=name)


def test_a_cnn_sweep_takes_a_balanced_test_subset(data_dir):
    """--test-size, once a head-only option, cuts a CNN sweep's test split too
    (certify evaluates every base model on it): class-balanced, refused at 0."""
    from sweep.errors import SweepError
    from sweep.experiment.config import Config
    from sweep.experiment.prepare import prepare

    p = prepare(Config(data=str(data_dir), counts=("2",), test_size=100))
    assert len(p.dataset.test_labels) == 100
    assert np.bincount(p.dataset.test_labels, minlength=10).tolist() == [10] * 10
    full = prepare(Config(data=str(data_dir), counts=("2",)))
    assert p.dataset.content_hash != full.dataset.content_hash
    with pytest.raises(SweepError, match="--test-size must be positive"):
        Config(test_size=0)
