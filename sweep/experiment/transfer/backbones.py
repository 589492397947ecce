"""Frozen backbones that turn images into a head's features.

- `simplecnn`: the project's SimpleCNN, pretrained by the engine (one replica)
  on the dataset's classes other than the two a head sweep poisons, so its
  features were learned without the attacked classes; the conv stack's
  flattened output (2048 values at 32x32, the analogue of VGG's bottleneck)
  is the feature. Saved under `$SWEEP_CACHE/backbones/` keyed by the data hash
  and the pretraining recipe, and reused.
- any `keras.applications` model by name (`vgg16`, `resnet50`, ...), on the JAX
  backend, `include_top=False`, the model's own `preprocess_input`, weights from
  a local Keras weights file or "imagenet" (downloaded by Keras). Needs the
  `transfer` extra.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import pathlib
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import numpy as np

from sweep import data as data_lib
from sweep import engine
from sweep.data.cache import cache_root
from sweep.data.hashing import array_hash
from sweep.engine import simple_cnn
from sweep.errors import SweepError, one_line

INSTALL = 'pip install -e ".[transfer]"'
# The engine's pretraining of the simplecnn backbone: the reference recipe, on a
# class-balanced subset of at most `per_class` images of each other class (1,000:
# minutes on a CPU, and as many images per class as the course project's heads).
PRETRAIN = {"epochs": 5, "batch_size": 128, "lr": 1e-3, "dropout": 0.5, "seed": 0,
            "per_class": 1000}
EXTRACT_BATCH = 250  # images per forward pass when extracting features


@dataclass
class Backbone:
    name: str
    weights_hash: str  # "sha256:..." of the frozen weights
    extract: Callable[[np.ndarray], np.ndarray]  # uint8 (N, H, W, 3) -> float32
    info: dict = field(default_factory=dict)  # for the manifest


def load(config, view) -> Backbone:
    """The backbone `config.backbone` names, with its weights loaded."""
    name = (config.backbone or "").strip().lower()
    if not name:
        raise SweepError("--model head needs --backbone (simplecnn, vgg16, ...)")
    if name == "simplecnn":
        if config.weights:
            raise SweepError("--backbone simplecnn is pretrained here; drop --weights")
        return simplecnn(view, pooling=config.pooling)
    return keras_backbone(name, config.weights, pooling=config.pooling)


# SimpleCNN pretrained on the other classes.


def simplecnn(view, *, pretrain: dict = PRETRAIN, pooling: str | None = None,
              log=None) -> Backbone:
    log = log or (lambda s: print(s, file=sys.stderr))
    full = view.full
    if full is None or full.n_classes <= 2:
        raise SweepError(
            "--backbone simplecnn pretrains on the classes besides the two poisoned "
            "ones, and this data has no others; use a multi-class dataset (e.g. "
            "CIFAR-10 with --classes cat,dog) or a Keras backbone"
        )
    if full.n_classes > 10:
        raise SweepError(f"--backbone simplecnn has 10 outputs; the data has "
                         f"{full.n_classes} classes")
    if full.train_images.shape[1:] != (32, 32, 3):
        raise SweepError("--backbone simplecnn takes 32x32 images; drop --image-size")
    excluded = sorted(int(i) for i in view.class_ids)
    key_blob = json.dumps({"data": full.content_hash, "excluded": excluded,
                           "recipe": pretrain, "version": 1}, sort_keys=True)
    key = hashlib.sha256(key_blob.encode()).hexdigest()[:32]
    path = cache_root() / "backbones" / f"simplecnn-{key}.npz"
    names = [(layer, part) for layer, _, _ in simple_cnn.LAYOUT for part in ("w", "b")]
    params, info = None, {"pretrained_on": [full.class_names[i] for i in range(
        full.n_classes) if i not in excluded], "pretrain": pretrain}
    if path.is_file():
        try:
            with np.load(path) as z:
                params = {layer: {} for layer, _ in names}
                for layer, part in names:
                    params[layer][part] = np.asarray(z[f"{layer}/{part}"])
                info["pretrain_test_accuracy"] = float(z["test_accuracy"])
        except (OSError, ValueError, KeyError):
            params = None
    if params is None:
        params, accuracy = pretrain_simplecnn(full, excluded, pretrain, log=log)
        info["pretrain_test_accuracy"] = accuracy
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, test_accuracy=accuracy,
                 **{f"{layer}/{part}": params[layer][part] for layer, part in names})
        os.replace(tmp, path)
    info["backbone_file"] = str(path)
    weights_hash = array_hash(*(params[layer][part] for layer, part in names))
    layers = simple_cnn.single_layers()
    conv = {k: jax.device_put(params[k]) for k in ("conv1", "conv2", "conv3")}

    @jax.jit
    def forward(x_u8):
        x = simple_cnn.normalize(x_u8)
        for name in ("conv1", "conv2", "conv3"):
            x = layers.pool(jax.nn.relu(layers.conv(x, **conv[name])))
        if pooling == "avg":
            return x.mean((1, 2))  # (B, 128)
        if pooling == "max":
            return x.max((1, 2))
        return x.reshape(x.shape[0], -1)  # (B, 2048): what fc1 of SimpleCNN reads

    def extract(images: np.ndarray) -> np.ndarray:
        return _batched(lambda b: np.asarray(forward(b)), images)

    name = "simplecnn" + (f"-{pooling}" if pooling else "")
    return Backbone(name, weights_hash, extract, {**info, "pooling": pooling})


def pretrain_simplecnn(full, excluded: list[int], recipe: dict, *, log):
    """Train one SimpleCNN with the engine on every class but `excluded`.

    Returns (params as numpy, test accuracy in percent on those classes).
    """
    others = np.flatnonzero(~np.isin(full.train_labels, excluded))
    train = others
    per_class = recipe.get("per_class")
    if per_class is not None:
        labels = full.train_labels[others]
        n = sum(min(per_class, int((labels == c).sum())) for c in np.unique(labels))
        if n < len(others):
            train = others[data_lib.balanced_subset(labels, n, seed=recipe["seed"])]
    test = np.flatnonzero(~np.isin(full.test_labels, excluded))
    log(f"backbone simplecnn: pretraining on {len(train):,} images of "
        f"{full.n_classes - len(excluded)} classes for {recipe['epochs']} epochs "
        "(once; saved for reuse)")
    r = engine.Recipe(
        n_train=len(train), n_classes=10,
        batch_size=min(recipe["batch_size"], len(train)), lr=recipe["lr"],
        dropout=recipe["dropout"], eval_batch_size=min(1000, len(test)),
    )
    eng = engine.Engine(r, full.train_images[train], full.test_images[test],
                        full.test_labels[test])
    keys = engine.replica_keys(np.array([recipe["seed"]]), np.zeros(1))
    labels = full.train_labels[train].astype(np.int32)[None]
    state, history = eng.train(labels, keys, recipe["epochs"])
    confusion = history[-1].confusion[0]
    accuracy = float(100.0 * np.trace(confusion) / confusion.sum())
    log(f"backbone simplecnn: test accuracy {accuracy:.1f}% on those classes")
    params = jax.tree.map(lambda leaf: np.asarray(leaf[0]), state.params)
    return params, accuracy


def _batched(fn, images: np.ndarray) -> np.ndarray:
    # Fixed-size batches (the last padded) so the forward pass compiles once.
    n = len(images)
    b = min(EXTRACT_BATCH, n)
    out = []
    for start in range(0, n, b):
        chunk = images[start : start + b]
        pad = b - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]),
                                                    chunk.dtype)])
        out.append(np.asarray(fn(chunk), np.float32)[: b - pad])
    return np.concatenate(out)


# keras.applications.


def import_keras():
    """Keras 3 on the JAX backend, or one line saying how to get it."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except ModuleNotFoundError as e:
        if e.name != "keras":  # keras is there, its configured backend is not
            raise SweepError(f"Keras could not start ({e}); set KERAS_BACKEND=jax")
        raise SweepError(f"Keras backbones need Keras 3: {INSTALL}") from None
    if not keras.__version__.startswith("3"):
        raise SweepError(f"Keras {keras.__version__} found, Keras 3 needed: {INSTALL}")
    if keras.backend.backend() != "jax":
        raise SweepError(
            f"Keras is running on {keras.backend.backend()}; set KERAS_BACKEND=jax"
        )
    return keras


@contextlib.contextmanager
def keras_context():
    """Where Keras code runs: it adds biases by rank promotion (which the
    project's own JAX code may have set to "raise"), and its Variable.__array__
    predates NumPy 2's copy keyword (a DeprecationWarning per conversion)."""
    with jax.numpy_rank_promotion("allow"), warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="__array__ implementation doesn't accept a copy",
            category=DeprecationWarning,
        )
        yield


def application(keras, name: str):
    """(constructor, preprocess_input) of the keras.applications model `name`."""
    apps = {k.lower(): getattr(keras.applications, k)
            for k in dir(keras.applications) if k[:1].isupper()}
    if name not in apps:
        raise SweepError(
            f"unknown backbone {name!r}; use simplecnn or a keras.applications "
            f"model: {', '.join(sorted(apps))}"
        )
    ctor = apps[name]
    module = importlib.import_module(
        "keras.applications." + ctor.__module__.rsplit(".", 1)[1]
    )
    return ctor, module.preprocess_input


def keras_backbone(name: str, weights: str | None, *, pooling: str | None = None
                   ) -> Backbone:
    """A keras.applications model without its top, weights from a file or imagenet.

    The input size is taken from the images when features are extracted (the
    convolutional weights do not depend on it), so one weights file serves any.
    """
    keras = import_keras()
    ctor, preprocess = application(keras, name)
    if not weights:
        raise SweepError(
            f"--backbone {name} needs --weights PATH (a Keras weights file) or "
            "--weights imagenet (downloads)"
        )
    if weights != "imagenet":
        path = pathlib.Path(weights).expanduser()
        if not path.is_file():
            raise SweepError(f"--weights {weights}: no such file")
    models: dict[tuple, object] = {}

    def build(shape):
        if shape in models:
            return models[shape]
        if weights == "imagenet":
            try:
                m = ctor(include_top=False, weights="imagenet", input_shape=shape,
                         pooling=pooling)
            except Exception as e:  # offline: URL fetch failure, and the like
                raise SweepError(
                    f"could not get the ImageNet weights of {name} "
                    f"({one_line(e, limit=200)}); pass --weights PATH to a local Keras "
                    "weights file"
                ) from None
        else:
            m = ctor(include_top=False, weights=None, input_shape=shape,
                     pooling=pooling)
            try:
                m.load_weights(str(path))
            except Exception as e:  # wrong model, wrong format
                raise SweepError(
                    f"--weights {weights} does not load into {name} ({one_line(e, limit=200)})"
                ) from None
        models[shape] = m
        return m

    def weights_of(m) -> str:
        return array_hash(*(np.asarray(v.value) for v in m.weights))

    # Hash the weights as loaded (the same for a file and the download) at a
    # small input size; the conv weights do not depend on the size.
    with keras_context():
        weights_hash = weights_of(build((32, 32, 3)))

    def extract(images: np.ndarray) -> np.ndarray:
        with keras_context():
            m = build(tuple(images.shape[1:]))

            def one(batch):
                x = preprocess(batch.astype(np.float32))
                return np.asarray(m(x, training=False))

            return _batched(one, images)

    info = {"keras": keras.__version__, "weights": weights, "pooling": pooling}
    return Backbone(name + (f"-{pooling}" if pooling else ""), weights_hash, extract,
                    info)
