"""Head sweeps end to end: the course folder layout, backbones, the feature cache."""

import json
import os
import sys

import jax
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sweep import data
from sweep.cli.main import main
from sweep.errors import SweepError
from sweep.experiment.config import Config
from sweep.experiment.transfer import backbones, features, two_classes
from tests.fixtures_data import shared_slice


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_CACHE", str(tmp_path / "cache"))
    # Keras adds biases by rank promotion; the engine's code stays under "raise".
    with jax.numpy_rank_promotion("allow"):
        yield


def make_course_folder(root, n_train=6, n_val=3, size=150):
    """ROOT/{train,validation}/{cats,dogs}/*.jpg, 150x150 (one odd-sized image).

    Cats are warm and dogs cool with noise, so a head can tell them apart.
    """
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("validation", n_val)):
        for name, tint in (("cats", (200, 90, 60)), ("dogs", (60, 90, 200))):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = (size, size) if i else (120, 160)  # resized on load
                noise = rng.integers(-50, 50, (h, w, 3))
                im = np.clip(np.array(tint) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(im).save(folder / f"{name[:-1]}.{i}.jpg", quality=95)
    return root


@pytest.fixture
def keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is first imported
    pytest.importorskip("keras")
    return backbones.import_keras()


@pytest.fixture
def vgg_weights(keras, tmp_path):
    """VGG16 without its top, random weights saved by the test (no download)."""
    keras.utils.set_random_seed(0)
    m = keras.applications.VGG16(include_top=False, weights=None,
                                 input_shape=(32, 32, 3))
    path = tmp_path / "vgg16.weights.h5"
    m.save_weights(str(path))
    return path, m


def head_config(root, **changes):
    base = dict(data=str(root), model="head", backbone="vgg16", image_size=32,
                counts=("1",), strategy="swap", seeds=2, epochs=1, batch_size=4)
    return Config(**{**base, **changes})


def test_course_folder_plural_names_and_keras_resizing(tmp_path, keras):
    root = make_course_folder(tmp_path / "course")
    view = two_classes.load(head_config(root, image_size=None, weights="x"))
    ds = view.dataset
    assert ds.class_names == ("cats", "dogs")
    assert ds.train_images.shape == (12, 150, 150, 3)  # the default target size
    assert ds.test_images.shape == (6, 150, 150, 3)  # validation/ is the test split
    np.testing.assert_array_equal(ds.train_labels, [0] * 6 + [1] * 6)
    # Every image, the odd-sized one too, is what Keras' loader gives.
    for i, path in enumerate(sorted((root / "train" / "cats").iterdir())):
        theirs = keras.utils.img_to_array(keras.utils.load_img(
            path, target_size=(150, 150), interpolation="bilinear"))
        np.testing.assert_array_equal(ds.train_images[i], theirs.astype(np.uint8))
    # --source cat finds cats, --target dog finds dogs.
    assert data.resolve_class("cat", ds.class_names, plurals=True) == 0
    assert data.resolve_class("dogs", ds.class_names, plurals=True) == 1
    with pytest.raises(SweepError, match="unknown class .horse.; classes are: cats, dogs"):
        data.resolve_class("horse", ds.class_names, plurals=True)


@pytest.mark.slow
def test_feature_cache_reused_and_rebuilt_on_data_or_weights_change(
    tmp_path, keras, vgg_weights
):
    root = make_course_folder(tmp_path / "course", n_train=3, n_val=2)
    path, m = vgg_weights
    config = head_config(root, weights=str(path))
    view = two_classes.load(config)
    images = view.dataset.train_images
    first = features.features(config, view, images)
    assert not first.info["cached"]
    assert first.train.shape == (6, 1, 1, 512)  # VGG16's bottleneck at 32x32
    # The features are VGG16's own on its own preprocessing.
    x = keras.applications.vgg16.preprocess_input(images.astype(np.float32))
    np.testing.assert_allclose(first.train, np.asarray(m(x)), rtol=1e-5, atol=1e-5)

    again = features.features(config, view, images)
    assert again.info["cached"] and again.info["features_key"] == first.info[
        "features_key"]
    np.testing.assert_array_equal(again.train, first.train)

    changed = images.copy()
    changed[0, 0, 0, 0] ^= 1  # one pixel of one image
    other = features.features(config, view, changed)
    assert not other.info["cached"]
    assert other.info["features_key"] != first.info["features_key"]

    w = m.get_layer("block5_conv3")
    kernel, bias = (np.asarray(v.value) for v in w.weights)
    w.set_weights([kernel * 1.01, bias])
    path2 = tmp_path / "vgg16-changed.weights.h5"
    m.save_weights(str(path2))
    rebuilt = features.features(config.replace(weights=str(path2)), view, images)
    assert not rebuilt.info["cached"]
    assert rebuilt.info["weights_hash"] != first.info["weights_hash"]
    assert not np.array_equal(rebuilt.train, first.train)


@pytest.mark.slow
def test_vgg16_head_sweep_on_course_folder_cli(tmp_path, vgg_weights, capsys):
    """The whole CLI path: folder -> VGG16 (self-saved weights) -> heads -> results."""
    root = make_course_folder(tmp_path / "course")
    path, _ = vgg_weights
    out = tmp_path / "out"
    rc = main(["--model", "head", "--backbone", "vgg16", "--weights", str(path),
               "--data", str(root), "--image-size", "32", "--counts", "1,2",
               "--source", "cat", "--target", "dog", "--seeds", "2",
               "--epochs", "2", "--out", str(out), "--quiet"])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["strategy"] == "swap"  # the head's default
    assert manifest["config"]["batch_size"] == 10
    assert manifest["class_names"] == ["cats", "dogs"]
    assert manifest["transfer"]["backbone"] == "vgg16"
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert sorted(metrics["count"].unique()) == [0, 1, 2]
    assert set(metrics["class_name"]) == {"cats", "dogs"}
    assert metrics["epoch"].max() == 2 and (metrics["n"] == 3).all()
    summary = pd.read_parquet(out / "summary.parquet")
    assert set(summary["n_seeds"]) == {2}
    poisoned = pd.read_parquet(out / "poisoned.parquet")
    assert len(poisoned) > 0
    assert "cats delta" in capsys.readouterr().out
    # verify rebuilds the two-class view, its hash and the poisoned sets.
    assert main(["verify", str(out)]) == 0, capsys.readouterr().out


@pytest.mark.slow
def test_simplecnn_backbone_pretrained_without_the_poisoned_classes(tmp_path):
    full = shared_slice(20, 4)
    view = two_classes.View(two_classes.two_classes(full, (3, 5)), full, (3, 5))
    assert view.dataset.class_names == ("cat", "dog")
    recipe = {**backbones.PRETRAIN, "epochs": 1, "batch_size": 32}
    logs = []
    first = backbones.simplecnn(view, pretrain=recipe, log=logs.append)
    assert "cat" not in first.info["pretrained_on"]
    assert "dog" not in first.info["pretrained_on"]
    assert len(first.info["pretrained_on"]) == 8
    assert any("160 images of 8 classes" in line for line in logs)
    feats = first.extract(view.dataset.train_images)
    assert feats.shape == (40, 2048) and feats.dtype == np.float32
    # Saved and reused: no second pretraining, the same weights.
    logs.clear()
    second = backbones.simplecnn(view, pretrain=recipe, log=logs.append)
    assert not logs and second.weights_hash == first.weights_hash
    np.testing.assert_array_equal(second.extract(view.dataset.train_images), feats)
    # --pooling avg: the same conv output, averaged over its 4x4 positions.
    pooled = backbones.simplecnn(view, pretrain=recipe, pooling="avg", log=logs.append)
    assert not logs and pooled.name == "simplecnn-avg"
    np.testing.assert_allclose(pooled.extract(view.dataset.train_images),
                               feats.reshape(40, 4, 4, 128).mean((1, 2)),
                               rtol=1e-5, atol=1e-6)


def test_simplecnn_backbone_needs_other_classes(tmp_path):
    root = make_course_folder(tmp_path / "course", n_train=2, n_val=1)
    config = head_config(root, backbone="simplecnn", image_size=None)
    with pytest.raises(SweepError, match="classes besides the two poisoned"):
        backbones.load(config, two_classes.load(config))


@pytest.mark.parametrize("args, message", [
    (["--model", "head"], "needs --backbone"),
    (["--model", "head", "--backbone", "vgg16"], "needs --weights PATH"),
    (["--model", "head", "--backbone", "vgg16", "--weights", "/no/such.h5"],
     "no such file"),
    (["--model", "head", "--backbone", "nosuchnet", "--weights", "x"],
     "unknown backbone"),
    (["--backbone", "vgg16"], "only apply with --model head"),
])
def test_head_bad_input_is_one_line(tmp_path, keras, capsys, args, message):
    root = make_course_folder(tmp_path / "course", n_train=2, n_val=1)
    rc = main([*args, "--data", str(root), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_missing_keras_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", None)  # as if not installed
    with pytest.raises(SweepError, match=r'pip install -e "\.\[transfer\]"'):
        backbones.import_keras()
