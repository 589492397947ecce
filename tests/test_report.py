"""write_report on results folders shaped exactly like a sweep's, and its refusals.

A real sweep takes about a minute even on a tiny CPU grid, so these folders are
written here: metrics, confusion and poisoned tables with a sweep's columns and
a known effect (cat -> dog), beside a manifest whose data spec points at a real
slice of the shared CIFAR-10 (so the flipped-image figure shows real images).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweep import data, report, stats
from sweep.errors import SweepError

NAMES = data.CIFAR10_CLASSES
CAT, DOG = 3, 5
N_TEST = 100  # test images per class
FIGURES = (
    "dose_response.png",
    "class_accuracy.png",
    "confusion.png",
    "training_curves.png",
    "class_distribution.png",
    "flipped_images.png",
)


def write_results(
    path: Path,
    *,
    seeds: int,
    counts: tuple[int, ...] = (0, 2, 10, 25),
    paired: bool = True,
    epochs: int = 2,
    train_labels: np.ndarray | None = None,
    data_spec: str | None = None,
    data_hash: str | None = None,
    diverged: tuple[tuple[int, int], ...] = (),
) -> Path:
    """A complete results folder: cat loses 0.6 points per flip, dog gains 0.3."""
    rng = np.random.default_rng(0)
    k = len(NAMES)
    base = 60 + rng.normal(0, 5, k)
    twin = rng.normal(0, 2, (seeds, k))
    metrics, confusion = [], []
    for replica, (count, s) in enumerate(itertools.product(counts, range(seeds))):
        seed = s if paired else 100 * count + s
        shift = twin[s] if paired else rng.normal(0, 2, k)
        effect = np.zeros(k)
        effect[CAT], effect[DOG] = -0.6 * count, 0.3 * count
        for epoch in range(1, epochs + 1):
            p = base + shift + effect - 4 * (epochs - epoch) + rng.normal(0, 1, k)
            correct = rng.binomial(N_TEST, np.clip(p, 5, 95) / 100)
            for true in range(k):
                weights = np.ones(k)
                weights[true] = 0
                if true == CAT:
                    weights[DOG] += count / 5  # the missing cats went to dog
                row = rng.multinomial(N_TEST - correct[true], weights / weights.sum())
                row[true] = correct[true]
                for pred in range(k):
                    confusion.append(
                        (replica, count, seed, epoch, true, pred, row[pred])
                    )
                metrics.append(
                    {
                        "replica": replica,
                        "count": count,
                        "seed": seed,
                        "paired": paired,
                        "epoch": epoch,
                        "class_id": true,
                        "class_name": NAMES[true],
                        "correct": int(correct[true]),
                        "n": N_TEST,
                        "accuracy": 100 * correct[true] / N_TEST,
                        "train_loss": 2.0 / epoch,
                        "train_accuracy": 40.0 + 10 * epoch,
                        "test_loss": 2.2 / epoch,
                        "test_accuracy": 100 * correct.sum() / (k * N_TEST),
                        "diverged": (count, s) in diverged,
                    }
                )
    labels = np.repeat(np.arange(k), 30) if train_labels is None else train_labels
    cats = np.random.default_rng(1).permutation(np.flatnonzero(labels == CAT))
    poisoned = pd.concat(
        [
            pd.DataFrame(
                {
                    "count": c,
                    "seed": -1,
                    "index": np.sort(cats[:c]),
                    "old_label": CAT,
                    "new_label": DOG,
                }
            )
            for c in counts
            if c
        ],
        ignore_index=True,
    )
    path.mkdir(parents=True)
    pd.DataFrame(metrics).to_parquet(path / "metrics.parquet")
    columns = ["replica", "count", "seed", "epoch", "true_id", "pred_id", "n"]
    pd.DataFrame(confusion, columns=columns).to_parquet(path / "confusion.parquet")
    poisoned.to_parquet(path / "poisoned.parquet")
    config = {
        "counts": [str(c) for c in counts if c],
        "seeds": seeds,
        "source": "cat",
        "target": "dog",
        "strategy": "flip",
        "selection": "random",
        "epochs": epochs,
        "batch_size": 128,
        "lr": 1e-3,
        "paired": paired,
        "data": data_spec,
        "train_size": None,
    }
    manifest = {
        "sweep_id": path.name,
        "status": "complete",
        "config": config,
        "source_id": CAT,
        "target_id": DOG,
        "resolved_counts": list(counts),
        "class_names": list(NAMES),
        "data_hash": data_hash,
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.fixture(scope="module")
def real_slice(tmp_path_factory) -> tuple[str, data.Dataset]:
    """30 training images a class of the shared CIFAR-10, as a loadable folder."""
    from tests.fixtures_data import shared_slice, write_parquet_dataset

    folder = write_parquet_dataset(
        tmp_path_factory.mktemp("cifar-slice"), shared_slice(30, 2)
    )
    return str(folder), data.load(folder, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def built(tmp_path_factory, real_slice) -> Path:
    spec, ds = real_slice
    folder = write_results(
        tmp_path_factory.mktemp("sweeps") / "paired",
        seeds=5,
        train_labels=ds.train_labels,
        data_spec=spec,
        data_hash=ds.content_hash,
        diverged=((10, 1),),
    )
    with pytest.MonkeyPatch.context() as patch:  # keep the decoded-data cache here
        patch.setenv("SWEEP_CACHE", str(tmp_path_factory.mktemp("report-cache")))
        report.write_report(folder)
    return folder


def test_report_writes_every_file_and_embeds_every_figure(built):
    for name in (*FIGURES, "report.md", "report.html", "summary.parquet"):
        assert (built / name).is_file(), name
    assert not list(built.glob(".*.tmp")), "a temporary file was left behind"
    page = (built / "report.html").read_text()
    sources = re.findall(r'src="([^"]+)"', page)
    assert len(sources) == len(FIGURES)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in sources}
    assert embedded == {(built / name).read_bytes() for name in FIGURES}
    markdown = (built / "report.md").read_text()
    assert all(f"]({name})" in markdown for name in FIGURES)


def test_report_summary_holds_every_statistic(built):
    summary = pd.read_parquet(built / "summary.parquet")
    assert list(summary.columns) == list(stats.SUMMARY_COLUMNS)
    assert len(summary) == 3 * len(NAMES)
    top = summary[(summary["class_id"] == CAT) & (summary["count"] == 25)].iloc[0]
    # Truth: -0.6 points per flipped label, -15 at 25, far outside the noise.
    assert top["ci_high"] < 0 and top["delta_mean"] == pytest.approx(-15, abs=3)
    assert top["p_method"] == "paired t"
    assert top["p_signflip_method"] == "sign-flip exact (2^5)"
    assert top["family"] == "confirmatory" and top["significant"]
    assert (summary[summary["count"] == 10]["n_seeds"] == 4).all()


def test_report_states_design_answers_and_divergence(built):
    text = (built / "report.md").read_text()
    for phrase in (
        "Design: paired",
        "Seeds: 5 (0, 1, 2, 3, 4)",
        "Poisoned counts: 2, 10, 25",
        "Diverged replicas: 1 left out (count, seed): (10, 1)",
        "Threshold (no --threshold given",
        "cat accuracy falls below",
        "Confirmatory: smallest effective count (familywise error <= 0.05",
        "Exploratory: other classes that moved",
        "Pairing: median twin correlation",
        "Power of the rule used",
        "with these seeds it cannot go below 0.0625",
    ):
        assert phrase in text, phrase
    assert "intervals need at least 2 seeds" not in text


def test_report_answers_a_given_threshold(tmp_path):
    folder = write_results(tmp_path / "sweep", seeds=3, counts=(0, 10, 25))
    report.write_report(folder, threshold=50, level=0.9)
    text = (folder / "report.md").read_text()
    assert "Threshold (given): cat accuracy" in text
    assert "50%" in text and "90% interval" in text
    assert pd.read_parquet(folder / "summary.parquet")["level"].eq(0.9).all()
    # No data location: the image figures are skipped with a note, no crash.
    assert "Label distribution and flipped images skipped" in text
    assert not (folder / "flipped_images.png").exists()
    assert (folder / "dose_response.png").is_file()


def test_single_seed_report_says_intervals_cannot_be_computed(tmp_path):
    folder = write_results(
        tmp_path / "one-seed", seeds=1, counts=(0, 25), data_spec="/no/such/data"
    )
    page = report.write_report(folder).read_text()
    assert (
        '<p class="note"><strong>Intervals need at least 2 seeds; this sweep has 1'
        in page
    )
    assert "could not be loaded" in page
    for name in ("dose_response.png", "class_accuracy.png", "training_curves.png"):
        assert (folder / name).is_file()
    summary = pd.read_parquet(folder / "summary.parquet")
    assert summary["delta_mean"].notna().all() and summary["ci_low"].isna().all()
    with pytest.raises(SweepError, match="pass --sd"):
        stats.plan(1.0, results_dir=folder)


def test_unpaired_report_and_plan_from_a_folder(tmp_path):
    folder = write_results(tmp_path / "unpaired", seeds=4, counts=(0, 25), paired=False)
    text = (report.write_report(folder).parent / "report.md").read_text()
    assert "Design: unpaired" in text and "this sweep is unpaired" in text
    table = stats.plan(1.0, results_dir=folder)
    assert table.attrs["sd_source"].startswith("pooled over 10 count x class rows")
    assert "this sweep" in set(table["note"])


def _break(folder: Path, how: str) -> Path:
    if how == "missing":
        return folder / "nope"
    if how == "a file":
        (folder / "file").write_text("x")
        return folder / "file"
    write_results(folder / how, seeds=2, counts=(0, 5), epochs=1)
    target = folder / how
    manifest = json.loads((target / "manifest.json").read_text())
    if how == "running":
        manifest["status"] = "running"
        (target / "manifest.json").write_text(json.dumps(manifest))
    elif how == "no metrics":
        (target / "metrics.parquet").unlink()
    elif how == "corrupt":
        (target / "metrics.parquet").write_bytes(b"PAR1 this is not parquet")
    elif how == "empty":
        metrics = pd.read_parquet(target / "metrics.parquet")
        metrics.iloc[:0].to_parquet(target / "metrics.parquet")
    elif how == "bad manifest":
        (target / "manifest.json").write_text("{not json")
    elif how == "no clean":
        metrics = pd.read_parquet(target / "metrics.parquet")
        metrics[metrics["count"] > 0].to_parquet(target / "metrics.parquet")
    return target


@pytest.mark.parametrize(
    ("how", "says"),
    [
        ("missing", "does not exist"),
        ("a file", "is not a folder"),
        ("running", "not complete"),
        ("no metrics", "no metrics.parquet"),
        ("corrupt", "cannot read"),
        ("empty", "has no rows"),
        ("bad manifest", "cannot read"),
        ("no clean", "no clean"),
    ],
)
def test_bad_results_folders_are_one_line_errors(tmp_path, how, says):
    folder = _break(tmp_path, how)
    with pytest.raises(SweepError, match=says) as error:
        report.write_report(folder)
    assert "\n" not in str(error.value)
    assert not (folder / "report.html").exists()


def test_bad_options_are_one_line_errors(tmp_path):
    folder = write_results(tmp_path / "sweep", seeds=2, counts=(0, 5), epochs=1)
    with pytest.raises(SweepError, match="--level"):
        report.write_report(folder, level=95)
    with pytest.raises(SweepError, match="--threshold"):
        report.write_report(folder, threshold=150)


def test_a_class_whose_largest_count_is_not_significant_says_why(tmp_path, capsys):
    # Cat loses 6 points at 10 flips (every seed) but nothing at 25: the fixed
    # sequence starts at 25, cannot reject there, and stops; the report and the
    # CLI say so, and name the smaller count as not a confirmed finding.
    from sweep.cli import console
    from sweep.report.write import analyse

    folder = write_results(tmp_path / "stops", seeds=4, counts=(0, 10, 25))
    metrics = pd.read_parquet(folder / "metrics.parquet")
    cat = metrics["class_id"] == CAT
    clean = metrics[cat & (metrics["count"] == 0)].set_index(["seed", "epoch"])
    for count, shift in ((10, -6.0), (25, 0.0)):
        rows = cat & (metrics["count"] == count)
        keys = pd.MultiIndex.from_frame(metrics.loc[rows, ["seed", "epoch"]])
        seed = metrics.loc[rows, "seed"].to_numpy()
        wobble = shift + np.array([0.4, -0.5, 0.3, -0.2])[seed]
        metrics.loc[rows, "accuracy"] = clean.loc[keys, "accuracy"].to_numpy() + wobble
    metrics.to_parquet(folder / "metrics.parquet")

    facts = analyse(folder).facts
    assert facts.effective["cat"] is None
    note = facts.stop_notes["cat"]
    assert note.startswith("the largest count's effect (25) is not significant")
    assert "smaller counts are not tested confirmatorily" in note
    assert "count 10 alone: p" in note and "not a confirmed finding" in note
    text = (report.write_report(folder).parent / "report.md").read_text()
    assert f"cat: {note}." in text
    console.print_headlines(facts)
    assert f"  cat: {note}" in capsys.readouterr().out


def test_threshold_panel_crosses_the_threshold_where_the_answer_does(tmp_path):
    """The drawn mean curve is linear between counts in data space, as the answer
    assumes, so on the symlog axis it crosses the threshold at the stated count."""
    from sweep.report import write

    folder = write_results(tmp_path / "sweep", seeds=3, counts=(0, 2, 10, 25))
    metrics = pd.read_parquet(folder / "metrics.parquet")
    curve = stats.dose_response(metrics, class_id=CAT, absolute=True)
    threshold = float(curve["accuracy_mean"].iloc[0]) - 9.0  # crossed in (10, 25)
    point, _ = stats.threshold_set(metrics, class_id=CAT, threshold=threshold)
    analysis = write.analyse(folder, threshold=threshold)
    drawn, _ = write.plan_figures(analysis, level=0.95, only="dose_response.png")
    ax = drawn[0][2]().axes[-1]
    line = next(ln for ln in ax.get_lines()
                if ln.get_label() == "mean (linear between counts)")
    # Where the line crosses on screen: straight between its points in display
    # coordinates, then back to a count.
    xy = ax.transData.transform(np.column_stack(line.get_data()))
    level = ax.transData.transform([(0.0, threshold)])[0, 1]
    below = np.flatnonzero(xy[:, 1] < level)[0]
    (x0, y0), (x1, y1) = xy[below - 1], xy[below]
    x_screen = x0 + (level - y0) * (x1 - x0) / (y1 - y0)
    drawn_count = ax.transData.inverted().transform([(x_screen, level)])[0, 0]
    assert 10 < point < 25
    assert drawn_count == pytest.approx(point, rel=2e-3)
