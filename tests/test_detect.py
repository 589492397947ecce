"""Detectors, their grading, and a detect run end to end on tiny made-up data."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from sweep.detect import detectors, folds, scoring

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


def test_repair_is_paired_and_removes_the_flags(detect_run):
    _, out = detect_run
    s = pd.read_parquet(out / "suspects.parquet")
    r = pd.read_parquet(out / "repair.parquet")
    assert set(r["count"]) == {0, 6} and (r["n_seeds"] == 2).all()
    m = pd.read_parquet(out / "repair_metrics.parquet")
    flags = s.groupby(["count", "seed"])["flag_cleanlab"].sum()
    got = m.groupby(["count", "seed"])["n_removed"].first()
    pd.testing.assert_series_equal(got.sort_index(), flags.sort_index(),
                                   check_names=False, check_dtype=False)
    cat = r[(r["class_name"] == "cat") & (r["count"] == 6)].iloc[0]
    assert cat["n_poison_removed"] <= 6
    assert (out / "detect.html").exists() and (out / "detect_pr.png").exists()


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
])
def test_bad_detect_options_are_one_line_errors(args, says, capsys):
    from sweep.__main__ import main

    assert main(["detect", "--data", "sample", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err


def test_repair_table_pairs_seeds_and_counts_what_was_removed():
    from sweep import stats
    from sweep.detect.pipeline import repair_table

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


def test_clean_suspects_table_lists_each_detectors_top_images():
    from sweep.detect import report

    rng = np.random.default_rng(0)
    rows = []
    for seed in (0, 1):
        for i in range(20):
            row = {"count": 0, "seed": seed, "index": i, "row": 100 + i,
                   "given_label": i % 3, "true_label": i % 3, "poisoned": False,
                   "ensemble_pred": (i + (i == 4)) % 3}
            for det in detectors.DETECTORS:
                row[f"score_{det}"] = rng.uniform() + 5.0 * (i == 4)
                row[f"flag_{det}"] = i == 4
            rows.append(row)
    table = report.clean_suspects_table(pd.DataFrame(rows), ["a", "b", "c"], n=3)
    assert list(table["detector"]) == list(detectors.DETECTORS)
    assert (table["flagged (mean over seeds)"] == 1.0).all()
    tops = table.iloc[:, 2]
    assert tops.str.startswith("104: b -> c").all()
