"""Every bad option and every bad data source: one line on stderr, non-zero exit.

One table of bad inputs, each run through `sweep.__main__.main` in-process (no
jax import per case) with a tiny valid data folder, so that only the named
thing is wrong. For each: the exit code, exactly one non-empty stderr line that
contains the expected fragment, no traceback (any other exception escaping
`main` fails the test), no training started, and nothing written to --out.
Two cases also run as real `python -m sweep` processes.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweep import data
from sweep.cli.main import main
from sweep.experiment.running import train_local, train_ray
from tests.fixtures_data import (
    encode_image,
    write_cifar_batches,
    write_image_folder,
    write_parquet_dataset,
)

# A valid sweep on the tiny folder; each case appends what it breaks (argparse
# keeps the last value of a repeated option).
BASE = ["--data", "{data}", "--out", "{out}", "--quiet", "--epochs", "1",
        "--seeds", "1", "--counts", "2"]
N_PER_CLASS = 10  # training images per class in the tiny folder


def tiny_dataset(shape=(32, 32, 3)) -> data.Dataset:
    """Random pixels under CIFAR-10's class names: 10 train, 2 test per class."""
    rng = np.random.default_rng(0)
    arrays = []
    for n in (N_PER_CLASS, 2):
        labels = np.repeat(np.arange(10), n)
        arrays += [rng.integers(0, 256, (len(labels), *shape), dtype=np.uint8), labels]
    return data.dataset_from_arrays(*arrays, data.CIFAR10_CLASSES, source="tiny")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    return write_parquet_dataset(root / "data", tiny_dataset())


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Caches in tmp, no shell data variables, and no training allowed."""
    monkeypatch.setenv("SWEEP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SWEEP_NO_TFDS", "1")
    for name in ("SWEEP_DATA", "SWEEP_CIFAR_URL", "SWEEP_CIFAR_MD5"):
        monkeypatch.delenv(name, raising=False)

    def no_training(*args, **kwargs):
        pytest.fail("training started although the input is bad")

    monkeypatch.setattr(train_local, "train_chunks", no_training)
    monkeypatch.setattr(train_ray, "train_chunks", no_training)


# Data makers: tmp_path -> what --data gets.


def _missing(tmp):
    return tmp / "no-such-folder"


def _empty(tmp):
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _junk_only(tmp):
    (tmp / "junk").mkdir()
    (tmp / "junk" / "notes.txt").write_text("not a dataset\n")
    return tmp / "junk"


def _not_a_dataset_file(tmp):
    (tmp / "notes.txt").write_text("not a dataset\n")
    return tmp / "notes.txt"


def _corrupt_parquet(tmp):
    folder = tmp / "corrupt"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for split in ("train", "test"):
        (folder / f"{split}.parquet").write_bytes(rng.bytes(4096))
    return folder


def _truncated_parquet(tmp):
    folder = write_parquet_dataset(tmp / "truncated", tiny_dataset())
    blob = (folder / "train.parquet").read_bytes()
    (folder / "train.parquet").write_bytes(blob[: len(blob) // 2])
    return folder


def _parquet_rows(tmp, image: np.ndarray, label: int = 0):
    """A parquet folder with CIFAR names whose first train row is `image`/`label`."""
    folder = tmp / "rows"
    folder.mkdir()
    good = encode_image(np.zeros((32, 32, 3), np.uint8))
    metadata = {b"class_names": json.dumps(list(data.CIFAR10_CLASSES))}
    for split, blobs, labels in (
        ("train", [encode_image(image), good], [label, 1]),
        ("test", [good], [0]),
    ):
        table = pa.table({"image": pa.array(blobs, pa.binary()),
                          "label": pa.array(labels, pa.int64())})
        pq.write_table(table.replace_schema_metadata(metadata),
                       folder / f"{split}.parquet")
    return folder


def _images_28x28(tmp):
    return _parquet_rows(tmp, np.zeros((28, 28, 3), np.uint8))


def _images_grayscale(tmp):
    return _parquet_rows(tmp, np.zeros((32, 32), np.uint8))


def _images_rgba(tmp):
    return _parquet_rows(tmp, np.zeros((32, 32, 4), np.uint8))


def _label_10(tmp):
    return _parquet_rows(tmp, np.zeros((32, 32, 3), np.uint8), label=10)


def _label_negative(tmp):
    return _parquet_rows(tmp, np.zeros((32, 32, 3), np.uint8), label=-1)


def _image_folder_grayscale(tmp):
    root = write_image_folder(tmp / "folder", tiny_dataset())
    victim = root / "train" / "cat" / "00031.png"
    victim.write_bytes(encode_image(np.zeros((32, 32), np.uint8)))
    return root


def _batch_is_a_list(tmp):
    folder = write_cifar_batches(tmp / "batches", tiny_dataset())
    (folder / "data_batch_1").write_bytes(pickle.dumps([1, 2, 3]))
    return folder.parent  # the parent of cifar-10-batches-py, as users pass it


class _RunsCode:
    """Unpickling this calls os.system(command)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _batch_runs_code(tmp):
    folder = write_cifar_batches(tmp / "batches", tiny_dataset())
    payload = _RunsCode(f"touch {tmp / 'PWNED'}")  # the test checks it never appears
    batch = {"batch_label": "x", "labels": [0], "data": payload}
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    return folder


def _test_split_without(class_id):
    """A tiny folder whose test split has no image of `class_id`."""

    def make(tmp):
        rng = np.random.default_rng(0)
        train = np.repeat(np.arange(10), N_PER_CLASS)
        test = np.repeat(np.setdiff1d(np.arange(10), [class_id]), 2)
        ds = data.dataset_from_arrays(
            rng.integers(0, 256, (len(train), 32, 32, 3), dtype=np.uint8), train,
            rng.integers(0, 256, (len(test), 32, 32, 3), dtype=np.uint8), test,
            data.CIFAR10_CLASSES, source="tiny")
        return write_parquet_dataset(tmp / f"no-test-{class_id}", ds)

    return make


def _case(id_, argv, code, fragment, maker=None):
    return pytest.param(argv, maker, code, fragment, id=id_)


def _run(*extra):
    return [*BASE, *extra]


CASES = [
    # Counts.
    _case("counts-negative", _run("--counts=-5"), 2, "count '-5' is negative"),
    _case("counts-negative-spaced", _run("--counts", "-5"), 2, "is negative"),
    _case("counts-not-numeric", _run("--counts", "abc"), 2,
          "count 'abc' is not a whole number or a percentage"),
    _case("counts-fraction", _run("--counts", "2.5"), 2, "'2.5' is not a whole number"),
    _case("counts-duplicated", _run("--counts", "5,5"), 2,
          "--counts has duplicates: 5"),
    _case("counts-duplicated-once-resolved", _run("--counts", "1,10%"), 2,
          "name the same number of flips twice (resolved: 1,1)"),
    _case("counts-over-class-size", _run("--counts", "100000"), 2,
          f"asks for 100000 flips but only {N_PER_CLASS} images of the source class"),
    _case("counts-percent-over-100", _run("--counts", "150%"), 2,
          "'150%' is over 100%"),
    _case("counts-empty", _run("--counts", ""), 2, "count '' is not"),
    # Seeds.
    _case("seeds-zero", _run("--seeds", "0"), 2, "--seeds must be at least 1, got 0"),
    _case("seeds-negative", _run("--seeds=-1"), 2,
          "--seeds must be at least 1, got -1"),
    _case("seeds-not-numeric", _run("--seeds", "abc"), 2,
          "argument --seeds: invalid int value: 'abc'"),
    _case("seed-start-negative", _run("--seed-start=-1"), 2,
          "--seed-start must be >= 0"),
    _case("seed-start-past-32-bits", _run("--seed-start", str(2**32)), 2,
          "training seeds must stay below 2**32"),
    _case("poison-seed-negative", _run("--poison-seed=-1"), 2,
          "--poison-seed must be >= 0, got -1"),
    # Classes.
    _case("source-unknown", _run("--source", "zebra"), 2,
          "unknown class 'zebra'; classes are: airplane"),
    _case("target-id-out-of-range", _run("--target", "42"), 2,
          "class id 42 is out of range 0..9"),
    _case("target-id-negative", _run("--target=-1"), 2, "class id -1 is out of range"),
    _case("source-equals-target", _run("--source", "cat", "--target", "cat"), 2,
          "--source and --target are both 'cat'"),
    _case("source-id-equals-target-name", _run("--source", "3", "--target", "cat"), 2,
          "--source and --target are both 'cat'"),
    _case("source-equals-target-case", _run("--source", "CAT", "--target", "cat"), 2,
          "--source and --target are both"),
    # Training recipe and engine.
    _case("epochs-zero", _run("--epochs", "0"), 2,
          "--epochs must be at least 1, got 0"),
    _case("batch-size-zero", _run("--batch-size", "0"), 2,
          "--batch-size must be at least 1, got 0"),
    _case("lr-zero", _run("--lr", "0"), 2, "--lr must be positive and finite, got 0.0"),
    _case("lr-negative", _run("--lr=-0.1"), 2, "--lr must be positive and finite"),
    _case("lr-infinite", _run("--lr", "inf"), 2,
          "--lr must be positive and finite, got inf"),
    _case("lr-nan", _run("--lr", "nan"), 2,
          "--lr must be positive and finite, got nan"),
    _case("lr-not-numeric", _run("--lr", "fast"), 2,
          "argument --lr: invalid float value"),
    _case("dropout-one", _run("--dropout", "1"), 2, "--dropout must be in [0, 1)"),
    _case("train-size-zero", _run("--train-size", "0"), 2,
          "--train-size must be positive, got 0"),
    _case("train-size-over-data", _run("--train-size", "1000"), 2,
          f"subset size 1000 needs 100 images of class 0, but only {N_PER_CLASS}"),
    _case("train-size-under-classes", _run("--train-size", "5"), 2,
          "subset size 5 is smaller than the number of classes (10)"),
    _case("replicas-per-step-zero", _run("--replicas-per-step", "0"), 2,
          "--replicas-per-step must be at least 1, got 0"),
    _case("kernel-unknown", _run("--kernel", "fastest"), 2,
          "unknown conv kernel 'fastest'"),
    _case("strategy-unknown", _run("--strategy", "shuffle"), 2,
          "argument --attack/--strategy: invalid choice: 'shuffle'"),
    _case("dtype-unknown", _run("--dtype", "float16"), 2,
          "argument --dtype: invalid choice: 'float16'"),
    _case("option-unknown", _run("--frobnicate"), 2,
          "unrecognized arguments: --frobnicate"),
    _case("threshold-over-100", _run("--threshold", "200"), 2,
          "--threshold is a percent in [0, 100], got 200.0"),
    # Output.
    _case("resume-without-sweep", _run("--resume"), 2, "nothing to resume in"),
    _case("out-is-a-file", _run("--out", "{file}"), 2, "exists and is not a folder"),
    _case("out-inside-a-file", _run("--out", "{file}/sweep"), 2,
          "cannot create output folder"),
    # Data sources.
    _case("data-missing-folder", _run(), 2, "no-such-folder does not exist", _missing),
    _case("data-empty-folder", _run(), 2, "no recognisable data in", _empty),
    _case("data-junk-only", _run(), 2, "junk: expected train*.parquet", _junk_only),
    _case("data-not-a-dataset-file", _run(), 2, "notes.txt is not a dataset",
          _not_a_dataset_file),
    _case("data-corrupt-parquet", _run(), 2,
          "train.parquet is not a readable parquet file", _corrupt_parquet),
    _case("data-truncated-parquet", _run(), 2,
          "train.parquet is not a readable parquet file", _truncated_parquet),
    _case("data-images-28x28", _run(), 2,
          "train.parquet row 0 is 28x28 with 3 channel(s)", _images_28x28),
    _case("data-images-grayscale", _run(), 2,
          "row 0 is 32x32 with 1 channel(s) (mode L); expected 32x32 with 3",
          _images_grayscale),
    _case("data-images-rgba", _run(), 2, "32x32 with 4 channel(s) (mode RGBA)",
          _images_rgba),
    _case("data-image-folder-grayscale", _run(), 2,
          "00031.png is 32x32 with 1 channel(s)", _image_folder_grayscale),
    _case("data-label-10", _run(), 2,
          "train.parquet: label 10 is out of range for 10 classes", _label_10),
    _case("data-label-negative", _run(), 2, "label -1 is out of range",
          _label_negative),
    _case("data-pickle-of-a-list", _run(), 2,
          "data_batch_1 is not a CIFAR batch: it holds a list", _batch_is_a_list),
    _case("data-pickle-runs-code", _run(), 2,
          "data_batch_1 is not a CIFAR batch: it references", _batch_runs_code),
    _case("data-test-split-lacks-source", _run(), 2,
          "the test split has no 'cat' image (the source class)",
          _test_split_without(3)),
    _case("data-test-split-lacks-target", _run(), 2,
          "the test split has no 'dog' image (the target class)",
          _test_split_without(5)),
    _case("optimizer-unknown", _run("--optimizer", "adamm"), 2,
          "--optimizer 'adamm' names 'adamm', which is not an optax function"),
    _case("optimizer-learning-rate-text",
          _run("--optimizer", "adam(learning_rate='x')"), 2,
          "gives adam learning_rate='x'; it takes a number or an optax schedule"),
    _case("optimizer-fails-when-applied", _run("--optimizer", "sgd(0.1, momentum='a')"),
          2, "--optimizer \"sgd(0.1, momentum='a')\" fails when applied"),
    # Backdoor attacks.
    _case("attack-unknown", _run("--attack", "trojan"), 2,
          "argument --attack/--strategy: invalid choice: 'trojan'"),
    _case("trigger-option-on-a-flip", _run("--trigger-size", "4"), 2,
          "--trigger-size only applies to a backdoor (--attack "
          "badnets|blend|clean-label)"),
    _case("source-all-on-a-flip", _run("--source", "all"), 2,
          "--source all is for backdoor attacks"),
    _case("blend-option-on-badnets", _run("--attack", "badnets", "--blend-alpha",
                                          "0.3"), 2,
          "--blend-alpha does not apply to --attack badnets (only to blend)"),
    _case("no-perturbation-on-badnets", _run("--attack", "badnets",
                                             "--no-perturbation"), 2,
          "--perturbation-eps/--no-perturbation does not apply to --attack badnets "
          "(only to clean-label)"),
    _case("patch-option-on-blend", _run("--attack", "blend", "--trigger-size", "2"),
          2, "--trigger-size does not apply to --attack blend (only to badnets and "
          "clean-label)"),
    _case("trigger-size-zero", _run("--attack", "badnets", "--trigger-size", "0"), 2,
          "--trigger-size must be at least 1, got 0"),
    _case("trigger-larger-than-images", _run("--attack", "badnets", "--trigger-size",
                                             "40"), 2,
          "a 40x40 patch at (row -8, col -8) does not fit a 32x32 image"),
    _case("trigger-position-unknown", _run("--attack", "badnets",
                                           "--trigger-position", "middle"), 2,
          "--trigger-position 'middle' is not one of bottom-right"),
    _case("trigger-position-outside", _run("--attack", "badnets",
                                           "--trigger-position", "30,2"), 2,
          "a 3x3 patch at (row 30, col 2) does not fit a 32x32 image"),
    _case("trigger-pattern-unknown", _run("--attack", "badnets", "--trigger-pattern",
                                          "stripes"), 2,
          "argument --trigger-pattern: invalid choice: 'stripes'"),
    _case("blend-alpha-over-one", _run("--attack", "blend", "--blend-alpha", "1.5"),
          2, "--blend-alpha must be in (0, 1], got 1.5"),
    _case("blend-alpha-zero", _run("--attack", "blend", "--blend-alpha", "0"), 2,
          "--blend-alpha must be in (0, 1], got 0.0"),
    _case("blend-seed-and-image", _run("--attack", "blend", "--blend-seed", "1",
                                       "--blend-image", "{file}"), 2,
          "--blend-seed draws a random pattern; --blend-image gives one"),
    _case("blend-image-missing", _run("--attack", "blend", "--blend-image",
                                      "{tmp}/no-such.png"), 2,
          "no-such.png could not be read as a trigger image"),
    _case("blend-image-not-an-image", _run("--attack", "blend", "--blend-image",
                                           "{file}"), 2,
          "a-file could not be read as a trigger image"),
    _case("perturbation-eps-over-255", _run("--attack", "clean-label",
                                            "--perturbation-eps", "300"), 2,
          "--perturbation-eps is in uint8 levels 0..255, got 300"),
    _case("clean-label-with-source", _run("--attack", "clean-label", "--source",
                                          "cat"), 2,
          "--source does not apply to --attack clean-label"),
    _case("backdoor-source-is-target", _run("--attack", "badnets", "--source",
                                            "dog"), 2,
          "--source and --target are both 'dog'"),
    _case("backdoor-count-over-candidates", _run("--attack", "badnets", "--counts",
                                                 "91"), 2,
          "count 91 asks for 91 poisoned images but only 90 training images can "
          "carry this trigger"),
    _case("backdoor-percent-over-candidates", _run("--attack", "badnets",
                                                   "--counts", "95%"), 2,
          "count 95% asks for 95 poisoned images but only 90"),
    _case("clean-label-count-over-target-class",
          _run("--attack", "clean-label", "--counts", "11"), 2,
          f"only {N_PER_CLASS} training images can carry this trigger"),
    _case("backdoor-counts-resolve-twice", _run("--attack", "badnets", "--counts",
                                                "1,1%"), 2,
          "name the same number of poisoned images twice (resolved: 1,1)"),
    _case("backdoor-with-pairs", _run("--attack", "badnets", "--pairs", "cat:dog"),
          2, "--pairs is for label flips"),
    _case("backdoor-with-threshold", _run("--attack", "badnets", "--report",
                                          "--threshold", "50"), 2,
          "--threshold asks how many flips push the source class below X%"),
    _case("backdoor-on-a-head", _run("--attack", "badnets", "--model", "head",
                                     "--backbone", "simplecnn"), 2,
          "backdoor attacks stamp images: they need --model cnn"),
    _case("backdoor-test-split-lacks-target", _run("--attack", "badnets"), 2,
          "the test split has no 'dog' image (the target class)",
          _test_split_without(5)),
    _case("backdoor-test-split-lacks-source",
          _run("--attack", "badnets", "--source", "cat"), 2,
          "the test split has no 'cat' image (the source class)",
          _test_split_without(3)),
    # Other commands.
    _case("detect-folds-over-images",
          ["detect", *_run("--seeds", "2", "--folds", "100000")], 2,
          "--folds 100000 is more than the 100 training images"),
    _case("detect-backdoor-repair-with",
          ["detect", *_run("--seeds", "2", "--attack", "badnets", "--repair-with",
                           "knn")],
          2, "with a backdoor attack the repair removes each detector's flags"),
    _case("detect-backdoor-one-seed", ["detect", *_run("--attack", "badnets")], 2,
          "detect needs --seeds 2 or more"),
    _case("detect-folds-one", ["detect", *_run("--seeds", "2", "--folds", "1")], 2,
          "--folds must be at least 2, got 1"),
    _case("report-missing-folder", ["report", "{tmp}/no-such-results"], 2,
          "no-such-results does not exist"),
    _case("report-on-a-file", ["report", "{file}"], 2, "is not a folder"),
    _case("report-not-a-sweep", ["report", "{tmp}"], 2,
          "has no manifest.json: not a sweep results folder"),
    _case("plan-negative-effect", ["plan", "--effect=-1"], 2,
          "--effect must be positive"),
    _case("verify-missing-folder",
          ["verify", "{tmp}/no-such-results", "--data", "{data}"], 2,
          "no-such-results does not exist"),
]


def _fill(argv: list[str], **values: str) -> list[str]:
    return [a.format(**values) for a in argv]


@pytest.mark.parametrize("argv, maker, code, fragment", CASES)
def test_bad_input_is_one_line_and_a_nonzero_exit(
    argv, maker, code, fragment, tiny_data, tmp_path, capsys
):
    if argv[0] == "verify":
        from sweep.cli import commands

        if not hasattr(commands, "cmd_verify"):
            pytest.skip("sweep verify is not written yet")
    a_file = tmp_path / "a-file"
    a_file.write_text("a regular file\n")
    out = tmp_path / "out"
    source = maker(tmp_path) if maker is not None else tiny_data
    argv = _fill(argv, data=source, out=out, file=a_file, tmp=tmp_path)
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's one-line usage errors
        status = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert status == code != 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].strip(), err
    assert "error: " in lines[0]
    assert fragment.lower() in lines[0].lower(), (fragment, lines[0])
    assert not out.exists(), "a refused sweep left an output folder behind"
    assert a_file.read_text() == "a regular file\n"
    assert not (tmp_path / "PWNED").exists(), "loading the data ran code from it"


def test_every_listed_bad_data_source_has_a_case():
    ids = {p.id for p in CASES}
    for needed in ("data-missing-folder", "data-empty-folder", "data-corrupt-parquet",
                   "data-truncated-parquet", "data-images-28x28",
                   "data-images-grayscale", "data-label-10", "data-pickle-of-a-list",
                   "data-pickle-runs-code"):
        assert needed in ids


# The same through a real process: what a user's terminal shows.


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--counts=-5"], "count '-5' is negative"),
        (["--data", "{tmp}/no-such-folder"], "no-such-folder does not exist"),
    ],
    ids=["counts-negative", "data-missing-folder"],
)
def test_a_real_process_prints_one_line_and_exits_2(
    extra, fragment, tiny_data, tmp_path
):
    out = tmp_path / "out"
    argv = _fill([*BASE, *extra], data=tiny_data, out=out, tmp=tmp_path)
    env = {**os.environ, "SWEEP_CACHE": str(tmp_path / "cache"), "SWEEP_NO_TFDS": "1"}
    env.pop("SWEEP_DATA", None)
    done = subprocess.run([sys.executable, "-m", "sweep", *argv], capture_output=True,
                          text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweep: error: "), done.stderr
    assert fragment in lines[0]
    assert done.stdout == ""
    assert not out.exists()
