"""The base models of a partition-aggregation defence, trained as isolated replicas.

A base model is named by what it is a function of: the seed (the partition
hash's salt and the training keys), the scheme (k partitions, d copies: DPA is
d = 1), its index among the k*d models, and the labels of its own images (the
images themselves are fixed by the hash). Its id is a digest of those, so a
model whose images no flip reached has the same id under every attack and is
trained once: a flip retrains only the models of its own bucket, and the
others are reused from disk, bit for bit. That reuse is sound because the
engine's isolated mode (`SubsetEngine(isolated=True)`) makes every replica a
function of its own subset, labels and keys alone, whatever chunk it trains in.

Chunks of models are written to OUT/chunks/models-<digest>.npz atomically; the
models already on disk are never trained again, so an interrupted run
continues where it stopped, with any chunk size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sweep import engine as engine_lib
from sweep import results
from sweep.defences.certify import partition
from sweep.errors import SweepError

CHUNK_PREFIX = "models-"
KEY_SALT = 0xCE271F  # base models' keys apart from every sweep replica's


class Scheme(NamedTuple):
    """k partitions, each image in d of the k*d models (DPA: d = 1)."""

    k: int
    d: int

    @property
    def n_models(self) -> int:
        return self.k * self.d

    @property
    def name(self) -> str:
        return "dpa" if self.d == 1 else "fa"


class Layout(NamedTuple):
    """Which images every model of one (seed, scheme) trains on."""

    index: np.ndarray  # (K, M) int32 training-set rows, model by model
    length: np.ndarray  # (K,) int32 images of each model
    shifts: np.ndarray  # (d,) FA's spreading shifts ([0] for DPA)


class BaseModel(NamedTuple):
    """One base model to train: its id and what it is a function of."""

    id: str
    seed: int
    scheme: Scheme
    model: int  # index among the scheme's k*d models
    count: int  # the first flip count whose ensemble holds it (0: clean)
    rows: np.ndarray  # (n,) int32 its training images, in hash order
    n_flipped: int  # its images whose label the attack changed


def layout(images: np.ndarray, scheme: Scheme, seed: int, hashes=None) -> Layout:
    """The hash partition of `images` (N, H, W, C) for one seed and scheme."""
    hashes = partition.image_hashes(images, seed=seed) if hashes is None else hashes
    buckets = (hashes % np.uint64(scheme.n_models)).astype(np.int64)
    shifts = partition.spread_shifts(scheme.k, scheme.d, seed=seed)
    index, length = partition.members(buckets, hashes, shifts, scheme.n_models)
    return Layout(index, length, shifts)


def model_id(seed: int, scheme: Scheme, model: int, member_labels: np.ndarray) -> str:
    """A digest of everything the model is a function of, within one run."""
    h = hashlib.sha256(f"{seed}/{scheme.k}/{scheme.d}/{model}/".encode())
    h.update(np.ascontiguousarray(member_labels, "<i4").tobytes())
    return h.hexdigest()[:20]


def ensemble_ids(lay: Layout, labels: np.ndarray, seed: int, scheme: Scheme
                 ) -> list[str]:
    """The ids of the K models of one ensemble under `labels` (N,)."""
    return [model_id(seed, scheme, i, labels[lay.index[i, : lay.length[i]]])
            for i in range(scheme.n_models)]


def model_keys(seeds, ks, ds, models) -> engine_lib.ReplicaKeys:
    """Init, shuffle and dropout keys of base models, from (seed, k, d, model)
    alone: never from the width, the chunk or the other models."""

    def one(seed, k, d, model):
        root = jax.random.fold_in(jax.random.key(seed), KEY_SALT)
        for part in (k, d, model):
            root = jax.random.fold_in(root, part)
        return tuple(jax.random.split(root, 3))

    arrays = [jnp.asarray(np.asarray(a), jnp.uint32) for a in (seeds, ks, ds, models)]
    return engine_lib.ReplicaKeys(*jax.vmap(one)(*arrays))


def preference_ranks(log_probs: np.ndarray) -> np.ndarray:
    """(R, n, C) scores -> (R, n, C) int8 ranks, C - 1 for the preferred class.

    The order of a model's scores with every tie going to the smaller class
    (the rule of its vote and of Run-Off Election's round 2), stored exactly
    in a byte per class. A model's vote is the argmax of its ranks.
    """
    c = log_probs.shape[-1]
    if c > 127:
        raise SweepError(f"{c} classes: preference ranks are stored as int8 (<= 127)")
    # Stable sort of -score: equal scores keep class order, smaller class first.
    order = np.argsort(-log_probs, axis=-1, kind="stable")
    ranks = np.empty(log_probs.shape, np.int8)
    top_down = np.arange(c - 1, -1, -1, dtype=np.int8)
    np.put_along_axis(ranks, order, np.broadcast_to(top_down, order.shape), axis=-1)
    return ranks


def params_digests(params) -> list[str]:
    """sha256 of every replica's parameters (its leaves' bytes, in tree order)."""
    leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(params))]
    out = []
    for r in range(leaves[0].shape[0]):
        h = hashlib.sha256()
        for leaf in leaves:
            h.update(np.ascontiguousarray(leaf[r]).tobytes())
        out.append(h.hexdigest())
    return out


def done_models(out: Path) -> dict[str, tuple[Path, int]]:
    """id -> (chunk file, row) of every model already on disk."""
    found = {}
    for path in sorted((Path(out) / results.CHUNKS).glob(f"{CHUNK_PREFIX}*.npz")):
        try:
            with np.load(path, allow_pickle=False) as z:
                ids = [str(i) for i in z["ids"]]
        except (OSError, ValueError, KeyError) as e:
            raise SweepError(f"{path} is unreadable ({e}); delete it and rerun to "
                             "train its models again") from None
        for j, i in enumerate(ids):
            found.setdefault(i, (path, j))
    return found


def load_models(out: Path, ids) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """The preference ranks (n_test, C) int8 and the facts of models `ids`."""
    where = done_models(out)
    missing = [i for i in ids if i not in where]
    if missing:
        raise SweepError(f"{len(missing)} base models are not on disk (e.g. "
                         f"{missing[0]}); rerun the same command to train them")
    ranks, facts = {}, {}
    by_file: dict[Path, list[str]] = {}
    for i in set(ids):
        by_file.setdefault(where[i][0], []).append(i)
    for path, wanted in by_file.items():
        with np.load(path, allow_pickle=False) as z:
            for i in wanted:
                j = where[i][1]
                ranks[i] = z["ranks"][j]
                facts[i] = {"params_sha256": str(z["params_sha256"][j]),
                            "train_loss": float(z["train_loss"][j]),
                            "chunk": path.name, "chunk_seconds": float(z["seconds"])}
    return ranks, facts


def chunk_plan(todo: list[BaseModel], size: int, batch_size: int
               ) -> list[list[BaseModel]]:
    """Models grouped into chunks of at most `size`, those with the same number
    of batches per epoch together (one compiled epoch per step count)."""
    todo = sorted(todo, key=lambda s: (-(-len(s.rows) // batch_size), s.seed,
                                       s.scheme, s.count, s.model))
    out, start = [], 0
    while start < len(todo):
        out.append(todo[start : start + size])
        start += size
    return out


def train_models(todo: list[BaseModel], *, recipe: engine_lib.Recipe, epochs: int,
                 train_images: np.ndarray, labels_of, test_images: np.ndarray,
                 test_labels: np.ndarray, out: Path, size: int, log) -> int:
    """Train the base models in `todo`, `size` per chunk, each chunk written as
    it ends; returns how many were trained.

    Args:
      labels_of: (seed, count) -> (N,) int32 training labels of that attack.
      size: replicas per chunk; a short chunk is padded with copies of its last
        model (the copies are dropped), so every chunk of one step count
        shares a compilation.
    """
    if not todo:
        return 0
    eng = engine_lib.SubsetEngine(recipe, train_images, test_images, test_labels,
                                  isolated=True)
    b = recipe.batch_size
    plan = chunk_plan(todo, size, b)
    for n, chunk in enumerate(plan):
        t = time.time()
        padded = chunk + [chunk[-1]] * (size - len(chunk))
        # The width rounded up to whole batches: the compiled epoch depends on
        # the step count only (extra width is padding, which trains nothing).
        width = max(1, -(-max(len(s.rows) for s in padded) // b)) * b
        index = np.zeros((len(padded), width), np.int32)
        for r, s in enumerate(padded):
            index[r, : len(s.rows)] = s.rows
            index[r, len(s.rows):] = s.rows[0] if len(s.rows) else 0
        length = np.array([len(s.rows) for s in padded], np.int32)
        labels = np.stack([labels_of(s.seed, s.count) for s in padded])
        keys = model_keys([s.seed for s in padded], [s.scheme.k for s in padded],
                          [s.scheme.d for s in padded], [s.model for s in padded])
        state, history, _ = eng.train(labels, keys, epochs,
                                      subsets=engine_lib.Subsets(index, length),
                                      evaluate=False)
        log_probs = eng.log_probs(state.params, test_images)
        ranks = preference_ranks(log_probs)
        digests = params_digests(state.params)
        real = len(chunk)
        ids = [s.id for s in chunk]
        name = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
        seconds = time.time() - t
        results.atomic_write_npz(
            Path(out) / results.CHUNKS / f"{CHUNK_PREFIX}{name}.npz",
            ids=np.array(ids), ranks=ranks[:real],
            params_sha256=np.array(digests[:real]),
            train_loss=np.asarray(history[-1].train_loss[:real], np.float64),
            seconds=np.float64(seconds), replicas=np.int64(len(padded)))
        log(f"base models: chunk {n + 1} of {len(plan)} ({real} models, "
            f"{width // b} steps per epoch): {seconds:.0f} s")
    return len(todo)


def certify_recipe(recipe: engine_lib.Recipe, *, batch_size: int,
                   eval_batch_size: int) -> engine_lib.Recipe:
    """The sweep's recipe for base models: the batch as asked, never clamped to
    the training set's size (a batch that grew with insertions elsewhere would
    change every model), and a small evaluation batch (many replicas at once)."""
    return dataclasses.replace(recipe, batch_size=batch_size,
                               eval_batch_size=eval_batch_size)
