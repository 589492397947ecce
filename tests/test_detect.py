"""Detectors, their grading, and a detect run end to end on tiny made-up data."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from sweep.defences.detect import detectors, folds, scoring

sklearn_metrics = pytest.importorskip("sklearn.metrics")
pytest.importorskip("cleanlab")


def test_average_precision_and_auroc_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(20, 300))
        truth = rng.random(n) < rng.uniform(0.02, 0.5)
        truth[0] = True
        truth[1] = False
        # Rounded scores: many ties, which both definitions must treat alike.
        scores = np.round(rng.normal(size=n) + truth * rng.uniform(0, 2), trial % 3)
        assert scoring.average_precision(scores, truth) == pytest.approx(
            sklearn_metrics.average_precision_score(truth, scores), abs=1e-12)
        assert scoring.auroc(scores, truth) == pytest.approx(
            sklearn_metrics.roc_auc_score(truth, scores), abs=1e-12)
        precision, recall, _ = sklearn_metrics.precision_recall_curve(truth, scores)
        r, p = scoring.pr_curve(scores, truth)
        # scikit-learn lists thresholds from low to high and appends (1, 0).
        np.testing.assert_allclose(r, recall[::-1][1:])
        np.testing.assert_allclose(p, precision[::-1][1:])


def test_precision_recall_at_k_and_flags():
    truth = np.array([1, 0, 1, 0, 0, 1], bool)
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.05])
    assert scoring.precision_recall_at_k(scores, truth, 3) == (2 / 3, 2 / 3)
    assert scoring.precision_recall_at_k(scores, truth, 6) == (0.5, 1.0)
    flags = np.array([1, 1, 0, 0, 0, 0], bool)
    assert scoring.precision_recall_flags(flags, truth) == (0.5, 1 / 3)
    p, r = scoring.precision_recall_flags(np.zeros(6, bool), truth)
    assert np.isnan(p) and r == 0.0


def test_precision_at_k_with_ties_is_the_mean_over_tie_orders():
    """Tied scores (deep k-NN's shares) are not broken by position: the value
    is the mean over every order within the tie, so listing the flips first
    or last in the data gives the same answer."""
    from itertools import permutations

    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.5, 0.1])
    truth = np.array([0, 1, 1, 0, 0, 1], bool)
    k = 3
    tied = np.flatnonzero(scores == 0.5)
    hits = []
    for order in permutations(tied):
        chosen = [0, *order[: k - 1]]
        hits.append(truth[chosen].sum())
    p, r = scoring.precision_recall_at_k(scores, truth, k)
    assert p == pytest.approx(np.mean(hits) / k)
    assert r == pytest.approx(np.mean(hits) / truth.sum())
    flipped = scoring.precision_recall_at_k(scores[::-1].copy(), truth[::-1].copy(), k)
    assert flipped == pytest.approx((p, r))


def _hand_made(n_per_class=60, k=3, seed=0):
    """Probabilities that agree with the labels, except image 7: labelled 0 but
    the models are sure it is class 2 (a blatant flip)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(k), n_per_class)
    logits = rng.normal(0, 0.5, (len(labels), k))
    logits[np.arange(len(labels)), labels] += 2.5
    logits[7] = [-3.0, -3.0, 4.0]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return labels, probs


def test_each_detector_ranks_the_blatant_flip_first():
    labels, probs = _hand_made()
    for name, (score, flag) in {
        "cleanlab": detectors.confident_learning(labels, probs),
        "margin": detectors.self_margin(labels, probs),
    }.items():
        assert np.argmax(score) == 7, name
        assert flag[7], name
    # AUM: training margins, image 7 fought its label every epoch.
    rng = np.random.default_rng(1)
    margin_sum = rng.uniform(0.5, 3.0, len(labels)) * 6
    margin_sum[7] = -4.0 * 6
    score, flag = detectors.area_under_margin(margin_sum, np.full(len(labels), 6))
    assert np.argmax(score) == 7 and flag[7] and flag.sum() == 1
    # Deep k-NN: features cluster by class; image 7 sits in class 2's cluster.
    centres = rng.normal(0, 10, (3, 16))
    true = labels.copy()
    true[7] = 2
    feats = centres[true] + rng.normal(0, 1, (len(labels), 16))
    query = np.arange(1, len(labels), 2)  # odd images scored, even ones the pool
    pool = np.arange(0, len(labels), 2)
    score, flag = detectors.deep_knn(feats[query], labels[query], feats[pool],
                                     labels[pool], k=5, n_classes=3)
    assert query[np.argmax(score)] == 7 and flag[query == 7][0]
    assert flag.sum() == 1


def test_cleanlab_receives_rows_in_label_order():
    """Shuffling rows and labels together gives the same scores, shuffled: the
    wrapper passes labels and probabilities aligned, row by row."""
    labels, probs = _hand_made()
    perm = np.random.default_rng(3).permutation(len(labels))
    score, flag = detectors.confident_learning(labels, probs)
    score_p, flag_p = detectors.confident_learning(labels[perm], probs[perm])
    np.testing.assert_allclose(score_p, score[perm])
    np.testing.assert_array_equal(flag_p, flag[perm])
    # float32 rows that sum to 1 only to float32 precision are accepted.
    score32, _ = detectors.confident_learning(labels, probs.astype(np.float32))
    np.testing.assert_allclose(score32, score, atol=1e-6)


def test_fold_subsets_hold_out_exactly_their_fold():
    rng = np.random.default_rng(0)
    f = folds.assign_folds(103, 4, rng)
    assert np.bincount(f).tolist() == [26, 26, 26, 25]
    sub = folds.training_subsets(f, 4)
    for j in range(4):
        trained = sub.index[j, : sub.length[j]]
        assert set(trained).isdisjoint(np.flatnonzero(f == j))
        assert set(trained) | set(np.flatnonzero(f == j)) == set(range(103))
        assert len(set(trained)) == sub.length[j]


def test_interval_summary_uses_seeds():
    per_seed = pd.DataFrame({
        "count": 10, "detector": "margin", "seed": [0, 1, 2],
        **{m: [0.5, 0.6, 0.7] for m in scoring.METRICS}})
    s = scoring.summarize(per_seed)
    row = s[s["metric"] == "auroc"].iloc[0]
    assert row["n_seeds"] == 3 and row["mean"] == pytest.approx(0.6)
    assert row["ci_low"] < 0.6 < row["ci_high"]


# End to end: a real `python -m sweep detect` on made-up, easily learned images.

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
           "ship", "truck")


def _colour_dataset(n_per_class, n_test_per_class, seed=0):
    """Each class one flat colour plus noise: learnable in a few steps, so
    flipped labels stand out to every detector."""
    from sweep import data

    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (10, 3))

    def make(n):
        labels = np.repeat(np.arange(10), n)
        noise = rng.integers(-20, 21, (len(labels), 32, 32, 3))
        images = np.clip(colours[labels][:, None, None, :] + noise, 0, 255)
        return images.astype(np.uint8), labels

    return data.dataset_from_arrays(*make(n_per_class), *make(n_test_per_class),
                                    CLASSES, source="colours")


def _detect_command(root, out) -> tuple[list[str], dict]:
    """The end-to-end detect run (argv, environment): 8 fold replicas in two
    chunks of 4 (so a run can be interrupted between them)."""
    argv = [sys.executable, "-m", "sweep", "detect", "--data", str(root / "data"),
            "--counts", "6", "--seeds", "2", "--folds", "2", "--epochs", "10",
            "--batch-size", "8", "--lr", "0.003", "--knn-k", "3",
            "--replicas-per-step", "4", "--out", str(out), "--quiet"]
    return argv, {**os.environ, "SWEEP_CACHE": str(root / "cache")}


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory):
    from tests.fixtures_data import write_parquet_dataset

    root = tmp_path_factory.mktemp("detect")
    write_parquet_dataset(root / "data", _colour_dataset(20, 4))
    out = root / "out"
    argv, env = _detect_command(root, out)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout, out


@pytest.mark.slow
def test_out_of_fold_models_never_score_images_they_trained_on(detect_run):
    _, out = detect_run
    s = pd.read_parquet(out / "suspects.parquet")
    chunks = sorted((out / "chunks").glob("oof-*.npz"))
    assert chunks
    seen = 0
    for path in chunks:
        with np.load(path) as z:
            for key in [k for k in z.files if k.endswith("_margin")]:
                i = int(key.split("_")[0])
                # Replica i is (count, seed, fold) in seed, count, fold order.
                seed, rest = divmod(i, 2 * 2)
                count = (0, 6)[rest // 2]
                fold = rest % 2
                rows = s[(s["count"] == count) & (s["seed"] == seed)]
                rows = rows.sort_values("index")
                held = rows["fold"].to_numpy() == fold
                margin = z[key]
                assert np.all(margin[held] == 0)  # never trained on
                assert np.all(margin[~held] != 0)  # trained on, every epoch
                assert len(z[f"{i}_probs"]) == held.sum()  # predicts its fold only
                seen += 1
    assert seen == 2 * 2 * 2


@pytest.mark.slow
def test_detectors_find_the_flips_in_easy_data(detect_run):
    stdout, out = detect_run
    s = pd.read_parquet(out / "suspects.parquet")
    assert len(s) == 2 * 2 * 200  # counts x seeds x images
    clean = s[s["count"] == 0]
    assert not clean["poisoned"].any()
    # Row order: the out-of-fold prediction of row i is image i's class (a
    # scrambled order would agree about 10% of the time).
    assert (clean["pred_label"] == clean["true_label"]).mean() > 0.8
    poisoned = s[s["count"] == 6]
    assert poisoned.groupby("seed")["poisoned"].sum().tolist() == [6, 6]
    assert (poisoned.loc[poisoned["poisoned"], "given_label"] == 5).all()
    d = pd.read_parquet(out / "detection.parquet")
    ap = d[(d["metric"] == "average_precision")].set_index("detector")["mean"]
    auc = d[(d["metric"] == "auroc")].set_index("detector")["mean"]
    # Chance is AP 6/200 = 0.03 and AUROC 0.5.
    for det in ("cleanlab", "margin", "knn", "ensemble"):
        assert ap[det] > 0.5, (det, ap[det])
    for det in detectors.DETECTORS:
        assert auc[det] > 0.85, (det, auc[det])
    assert "detection of the flipped labels" in stdout


@pytest.mark.slow
def test_repair_is_paired_and_removes_the_flags(detect_run):
    _, out = detect_run
    s = pd.read_parquet(out / "suspects.parquet")
    r = pd.read_parquet(out / "repair.parquet")
    assert set(r["count"]) == {0, 6} and (r["n_seeds"] == 2).all()
    assert set(r["method"]) == {"remove", "relabel"}
    assert len(r) == 2 * 2 * 10  # counts x methods x classes
    m = pd.read_parquet(out / "repair_metrics.parquet")
    assert set(m["method"]) == {"remove", "relabel"}
    flags = s.groupby(["count", "seed"])["flag_cleanlab"].sum()
    removal = m[m["method"] == "remove"]
    got = removal.groupby(["count", "seed"])["n_removed"].first()
    pd.testing.assert_series_equal(got.sort_index(), flags.sort_index(),
                                   check_names=False, check_dtype=False)
    # Relabelling changes the flagged images whose predicted class differs.
    moved = (s["flag_cleanlab"] & (s["pred_label"] != s["given_label"])).groupby(
        [s["count"], s["seed"]]).sum()
    got = m[m["method"] == "relabel"].groupby(["count", "seed"])["n_relabelled"].first()
    pd.testing.assert_series_equal(got.sort_index(), moved.sort_index(),
                                   check_names=False, check_dtype=False)
    assert moved.loc[6].min() > 0  # easy data: the flips are relabelled
    cat = r[(r["class_name"] == "cat") & (r["count"] == 6)]
    assert (cat["n_poison_removed"] <= 6).all()
    relabel = cat[cat["method"] == "relabel"].iloc[0]
    assert 0 < relabel["n_poison_restored"] <= relabel["n_poison_removed"]
    assert cat[cat["method"] == "remove"]["n_poison_restored"].isna().all()
    # Both repairs in the printed tables and the report.
    stdout, _ = detect_run
    assert "relabel" in stdout and "remove" in stdout
    page = (out / "detect.md").read_text()
    assert "| 6 | relabel | cat |" in page and "| 6 | remove | cat |" in page
    assert (out / "detect.html").exists() and (out / "detect_pr.png").exists()


def _detect_config(argv):
    from sweep.cli.detect_command import detect_parser
    from sweep.cli.main import config_from
    from sweep.defences.detect.detect_run import DetectConfig

    a = detect_parser(None).parse_args(argv)
    return DetectConfig(sweep=config_from(a), folds=a.folds, fold_seed=a.fold_seed,
                        knn_k=a.knn_k, repair_with=a.repair_with,
                        repair_methods=tuple(a.repair_method.split(",")))


def test_default_fingerprint_is_the_one_from_before_relabel_repairs():
    """A run made before relabelling existed (removal only, no repair_methods)
    must continue under this code: at the default, the fingerprint is the old
    one (literal values computed on main at d93e593)."""
    assert _detect_config(["--data", "sample"]).fingerprint() == "30775fa8d331"
    # The lead's 10,000-image CIFAR-10 run (/work/runs/detect-10k).
    lead = ["--data", "../shared/data/cifar10", "--train-size", "10000", "--seeds",
            "3", "--epochs", "5", "--replicas-per-step", "12", "--out",
            "/work/runs/detect-10k"]
    assert _detect_config(lead).fingerprint() == "b8cc3dc2c065"
    both = _detect_config(["--data", "sample", "--repair-method", "relabel,remove"])
    assert both.repair_methods == ("remove", "relabel")
    assert both.fingerprint() == "30775fa8d331"
    one = _detect_config(["--data", "sample", "--repair-method", "remove"])
    assert one.fingerprint() != "30775fa8d331"


@pytest.mark.slow
def test_relabel_replicas_train_on_the_relabelled_labels(detect_run, tmp_path,
                                                         monkeypatch):
    """train_repaired hands the engine, for a relabel replica, the given labels
    with the flagged images set to their out-of-fold predicted class (all
    images kept); for a removal replica, the given labels minus the flagged
    images. Finished removal chunks (their names from before relabelling) are
    reused: only the relabel replicas train."""
    import shutil

    from sweep import engine as engine_lib
    from sweep.defences.detect.detect_run import train_repaired
    from sweep.experiment import prepare as prepare_lib

    _, reference = detect_run
    root = reference.parent
    monkeypatch.setenv("SWEEP_CACHE", str(root / "cache"))
    c = _detect_config(["--data", str(root / "data"), "--counts", "6", "--seeds",
                        "2", "--folds", "2", "--epochs", "2", "--batch-size", "8",
                        "--replicas-per-step", "4"])
    p = prepare_lib.prepare(c.sweep)
    suspects = pd.read_parquet(reference / "suspects.parquet")
    calls = []

    class Recording:
        def __init__(self, recipe, *args, **kwargs):
            self.k = recipe.n_classes

        def train(self, labels, keys, epochs, *, subsets, evaluate):
            calls.append((np.asarray(labels), np.asarray(subsets.index),
                          np.asarray(subsets.length)))
            r = len(labels)
            confusion = np.tile(np.eye(self.k, dtype=np.int32), (r, 1, 1))
            epoch = engine_lib.EpochMetrics(np.zeros(r), np.zeros(r), np.zeros(r),
                                            confusion)
            return None, [epoch] * epochs, None

    monkeypatch.setattr(engine_lib, "SubsetEngine", Recording)
    grid = [(count, seed) for seed in (0, 1) for count in (0, 6)]  # replica order

    def expected(count, seed):
        g = suspects[(suspects["count"] == count) & (suspects["seed"] == seed)]
        g = g.sort_values("index")
        flag = g["flag_cleanlab"].to_numpy()
        return flag, g["given_label"].to_numpy(), g["pred_label"].to_numpy()

    out = tmp_path / "both"
    (out / "chunks").mkdir(parents=True)
    m = train_repaired(c, p, out, suspects, log=lambda s: None)
    assert sorted(x.name for x in (out / "chunks").iterdir()) == [
        "relabel-r00000-00003.parquet", "repair-r00000-00003.parquet"]
    assert len(calls) == 2  # one chunk per method, removal first
    (rm_labels, rm_index, rm_length), (rl_labels, rl_index, rl_length) = calls
    n = len(p.train_labels)
    changed = 0
    for j, (count, seed) in enumerate(grid):
        flag, given, pred = expected(count, seed)
        np.testing.assert_array_equal(rl_labels[j], np.where(flag, pred, given))
        assert rl_length[j] == n
        np.testing.assert_array_equal(np.sort(rl_index[j]), np.arange(n))
        np.testing.assert_array_equal(rm_labels[j], given)
        assert rm_length[j] == n - flag.sum()
        np.testing.assert_array_equal(rm_index[j, : rm_length[j]],
                                      np.flatnonzero(~flag))
        changed += int((rl_labels[j] != given).sum())
    assert changed > 0
    assert set(m["method"]) == {"remove", "relabel"}

    # A folder with the removal chunk of an older run: only relabel trains,
    # and the removal rows are that chunk's.
    old = tmp_path / "old"
    (old / "chunks").mkdir(parents=True)
    shutil.copy(reference / "chunks" / "repair-r00000-00003.parquet",
                old / "chunks")
    calls.clear()
    m = train_repaired(c, p, old, suspects, log=lambda s: None)
    assert len(calls) == 1
    np.testing.assert_array_equal(calls[0][0], rl_labels)
    real = pd.read_parquet(reference / "repair_metrics.parquet")
    pd.testing.assert_frame_equal(
        m[m["method"] == "remove"].dropna(axis=1, how="all").reset_index(drop=True),
        real[real["method"] == "remove"].dropna(axis=1, how="all")
        .reset_index(drop=True), check_dtype=False)  # concat with fake rows


TABLES = ("suspects.parquet", "detection_seeds.parquet", "detection.parquet",
          "repair_metrics.parquet", "repair.parquet")


@pytest.mark.slow
def test_a_killed_detect_run_continues_to_the_same_tables(detect_run, tmp_path):
    """The same run as `detect_run`, killed (SIGKILL) once its first fold-model
    chunk is on disk, then rerun: the finished chunk is kept, not retrained,
    and the tables equal the uninterrupted run's."""
    import time

    _, reference = detect_run
    out = tmp_path / "out"
    argv, env = _detect_command(reference.parent, out)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 600
        while not list((out / "chunks").glob("oof-*.npz")):
            assert proc.poll() is None, "the run ended before its first chunk"
            assert time.time() < deadline, "no chunk after 600 s"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    done_before = sorted((out / "chunks").glob("oof-*.npz"))
    assert [p.name for p in done_before] == ["oof-r00000-00003.npz"]
    assert not (out / "suspects.parquet").exists()
    mtime = done_before[0].stat().st_mtime_ns

    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr
    assert "fold models 1-4 of 8" not in done.stderr  # kept, not retrained
    assert "fold models 5-8 of 8" in done.stderr
    assert done_before[0].stat().st_mtime_ns == mtime
    for name in TABLES:
        pd.testing.assert_frame_equal(pd.read_parquet(out / name),
                                      pd.read_parquet(reference / name), obj=name)


@pytest.mark.parametrize("args, says", [
    (["--folds", "1"], "--folds must be at least 2"),
    (["--repair-with", "magic"], "--repair-with must be one of"),
    (["--seeds", "1"], "detect needs --seeds 2 or more"),
    (["--poison-per-seed"], "--poison-per-seed is not supported"),
    (["--knn-k", "0"], "--knn-k must be at least 1"),
    (["--repair-method", "magic"], "--repair-method must be one or both of"),
    (["--repair-method", "remove,remove"], "--repair-method must be one or both of"),
])
def test_bad_detect_options_are_one_line_errors(args, says, capsys):
    from sweep.cli.main import main

    assert main(["detect", "--data", "sample", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


def test_repair_table_pairs_seeds_and_counts_what_was_removed():
    from sweep import stats
    from sweep.defences.detect.detect_run import repair_table

    rng = np.random.default_rng(0)
    seeds, classes = [0, 1, 2], ["cat", "dog"]

    def frame(counts, epoch_acc):
        rows = []
        for count in counts:
            for seed in seeds:
                for cid, name in enumerate(classes):
                    rows.append({"count": count, "seed": seed, "epoch": 2,
                                 "class_id": cid, "class_name": name,
                                 "accuracy": epoch_acc(count, seed, cid),
                                 "diverged": False})
        return pd.DataFrame(rows)

    table = {(c, s, k): rng.uniform(40, 90) for c in (0, 10) for s in seeds
             for k in (0, 1)}
    fixed = {(c, s, k): rng.uniform(40, 90) for c in (0, 10) for s in seeds
             for k in (0, 1)}
    twins = frame((0, 10), lambda c, s, k: table[(c, s, k)])
    repaired = frame((0, 10), lambda c, s, k: fixed[(c, s, k)])
    # 6 images: index 0-1 flipped at count 10; flags remove 0 and 2 (a clean cat).
    sus = []
    for count in (0, 10):
        for seed in seeds:
            for i in range(6):
                sus.append({"count": count, "seed": seed, "index": i,
                            "poisoned": count == 10 and i < 2,
                            "true_label": 0 if i < 4 else 1,
                            "flag_cleanlab": i in (0, 2)})
    r = repair_table(twins, repaired, pd.DataFrame(sus), "cleanlab", source=0,
                     level=0.95)
    row = r[(r["count"] == 10) & (r["class_name"] == "cat")].iloc[0]
    deltas = [fixed[(10, s, 0)] - table[(0, s, 0)] for s in seeds]
    mean, (low, high) = stats.t_interval(np.array(deltas))
    assert row["repaired_vs_clean"] == pytest.approx(mean)
    assert (row["repaired_vs_clean_low"], row["repaired_vs_clean_high"]) == (
        pytest.approx(low), pytest.approx(high))
    assert row["n_removed"] == 2 and row["n_poison_removed"] == 1
    assert row["n_clean_source_removed"] == 1
    clean = r[(r["count"] == 0) & (r["class_name"] == "cat")].iloc[0]
    assert clean["n_poison_removed"] == 0 and clean["n_clean_source_removed"] == 2
    assert clean["poisoned_vs_clean"] == 0
    assert (r["method"] == "remove").all()  # no method column: a removal

    # Both repairs: rows per method, each paired with the same clean twins.
    # Predicted classes: flipped image 0 -> its true class 0, clean image 2 ->
    # class 1 (a clean cat given a wrong label), image 1 unflagged.
    relabelled = frame((0, 10), lambda c, s, k: fixed[(c, s, k)] - 5.0)
    both = pd.concat([repaired.assign(method="remove"),
                      relabelled.assign(method="relabel")], ignore_index=True)
    sus = pd.DataFrame(sus).assign(
        given_label=lambda d: np.where(d["poisoned"], 1, d["true_label"]),
        pred_label=lambda d: np.where(d["index"] == 2, 1, d["true_label"]))
    r2 = repair_table(twins, both, sus, "cleanlab", source=0, level=0.95)
    assert list(r2.drop_duplicates("method")["method"]) == ["remove", "relabel"]
    pd.testing.assert_frame_equal(
        r2[r2["method"] == "remove"].dropna(axis=1, how="all").reset_index(drop=True),
        r.dropna(axis=1, how="all"))
    row = r2[(r2["method"] == "relabel") & (r2["count"] == 10)
             & (r2["class_name"] == "cat")].iloc[0]
    assert row["repaired_vs_clean"] == pytest.approx(mean - 5.0)
    assert row["poisoned_vs_clean"] == pytest.approx(
        r[(r["count"] == 10) & (r["class_name"] == "cat")].iloc[0]["poisoned_vs_clean"])
    assert row["n_poison_restored"] == 1 and row["n_clean_relabelled"] == 1


def test_clean_suspects_table_lists_each_detectors_top_images():
    from sweep.defences.detect import detect_report as report

    rng = np.random.default_rng(0)
    rows = []
    for seed in (0, 1):
        for i in range(20):
            row = {"count": 0, "seed": seed, "index": i, "row": 100 + i,
                   "given_label": i % 3, "true_label": i % 3, "poisoned": False,
                   "ensemble_pred": (i + (i == 4)) % 3, "p_given": rng.uniform()}
            for det in detectors.DETECTORS:
                row[f"score_{det}"] = rng.uniform() + 5.0 * (i == 4)
                row[f"flag_{det}"] = i == 4
            rows.append(row)
    table = report.clean_suspects_table(pd.DataFrame(rows), ["a", "b", "c"], n=3)
    assert list(table["detector"]) == list(detectors.DETECTORS)
    assert (table["flagged (mean over seeds)"] == 1.0).all()
    tops = table.iloc[:, 2]
    assert tops.str.startswith("104: b -> c").all()


def test_top_suspects_break_ties_by_the_given_labels_probability():
    """Tied scores (deep k-NN's shares) go to the image the models find least
    likely to carry its label, not to the first one in the data."""
    from sweep.defences.detect import detect_report as report

    frame = pd.DataFrame({
        "count": 0, "seed": 0, "index": np.arange(4), "row": np.arange(4),
        "given_label": 0, "true_label": 0, "poisoned": False, "ensemble_pred": 1,
        "score_knn": [1.0, 1.0, 1.0, 0.2], "p_given": [0.30, 0.05, 0.20, 0.0]})
    top = report.top_suspects(frame, 0, "knn", 3)
    assert list(top["index"]) == [1, 2, 0]


def test_pr_panel_shows_the_chance_line_at_small_poison_shares():
    """50 flips in 2,000 images (2.5%): precision on a log scale, the chance
    line inside the axes and labelled; the rate curve and suspect grid draw."""
    from sweep.defences.detect import detect_report as report

    rng = np.random.default_rng(0)
    rows = []
    for seed in (0, 1):
        truth = np.zeros(2000, bool)
        truth[rng.choice(2000, 50, replace=False)] = True
        frame = {"count": 50, "seed": seed, "poisoned": truth}
        for det in detectors.DETECTORS:
            frame[f"score_{det}"] = rng.normal(size=2000) + 2.0 * truth
        rows.append(pd.DataFrame(frame))
    figure = report.figure_pr_curves(pd.concat(rows, ignore_index=True))
    ax = figure.axes[0]
    assert ax.get_yscale() == "log"
    low, high = ax.get_ylim()
    assert low < 0.025 < high
    assert any("chance = poison share 2.5%" in t.get_text() for t in ax.texts)
    report._png(figure)
    detection = pd.DataFrame([
        {"count": c, "detector": d, "metric": "recall_at_k", "mean": 0.5,
         "ci_low": 0.3 if d != "ensemble" else np.nan,
         "ci_high": 0.7 if d != "ensemble" else np.nan}
        for c in (50, 500) for d in detectors.DETECTORS])
    report._png(report.figure_detection_rate(detection))
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    report._png(report.figure_suspects(images, [1, 2, 3], [1, 3, 3], [1, 2, 5],
                                       list(CLASSES), title="t"))
