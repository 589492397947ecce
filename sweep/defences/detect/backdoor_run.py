"""A detect run for a trigger backdoor: train, look inside, grade, remove, retrain.

For each seed, the sweep's replicas (the clean twin and every poisoned count)
train here exactly as the sweep trains them (`running.train_local.train_chunk`:
the same keys, labels, stamps, engine and chunking), so each replica's ASR is
the sweep's. Each replica's penultimate features (512-d, `engine.make_predict`)
of its training images as it trained on them (stamped where its mask says, the
clean-label attack's perturbed copies where its rows say) go to spectral
signatures (Tran et al. 2018) and activation clustering (Chen et al. 2018) on
the attack's target class, the class every poisoned image is labelled with.
Scores are graded against the planted truth (`backdoor_tables`). Repair by
removal: every poisoned replica retrains without each detector's flagged images
(`SubsetEngine`, the poisoned replica's keys, labels and stamps), and its ASR
and clean accuracy are compared with the poisoned replica's, paired by seed.

Results (OUT/): backdoor_metrics.parquet (the replicas' metrics, the sweep's
columns), backdoor_suspects.parquet (per replica x target-class image: scores,
flags, truth), detection_seeds.parquet, detection.parquet,
repair_metrics.parquet, repair.parquet, detect.json. chunks/ holds each chunk's
pieces (bd-*), written atomically: an interrupted run continues.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import jax
import numpy as np
import pandas as pd

from sweep import engine as engine_lib
from sweep import results
from sweep.defences.detect import backdoor_detectors, backdoor_tables, folds
from sweep.engine import memory, sharding, triggers
from sweep.errors import SweepError
from sweep.experiment.config import BACKDOORS, Config
from sweep.experiment.prepare import build_engine, prepare
from sweep.experiment.running import perturbation, train_local
from sweep.results.environment import environment

DETECTORS = backdoor_tables.DETECTORS  # ("spectral", "clustering")


@dataclass(frozen=True)
class BackdoorDetectConfig:
    """A backdoor detect run: the sweep it trains like, plus the defence."""

    sweep: Config
    multiplier: float = 1.5  # spectral signatures remove 1.5 epsilon per class
    reduce: str = "ica"  # activation clustering's reduction (the paper's ICA)
    size_threshold: float = 0.35  # AC: a cluster under this share is poisoned
    repair: bool = True  # retrain without each detector's flags
    level: float = 0.95

    def __post_init__(self):
        if self.sweep.strategy not in BACKDOORS:
            raise SweepError("the backdoor detect run takes --attack "
                             f"{'|'.join(BACKDOORS)}")
        if self.sweep.seeds < 2:
            raise SweepError("detect needs --seeds 2 or more (intervals over seeds)")
        if self.sweep.poison_per_seed:
            raise SweepError("the backdoor detect run does not support "
                             "--poison-per-seed")
        if self.sweep.model == "head":
            raise SweepError("the backdoor detect run needs SimpleCNN (--model cnn)")
        if self.sweep.cluster:
            raise SweepError("the backdoor detect run trains here; drop --cluster")
        if self.reduce not in backdoor_detectors.REDUCERS:
            raise SweepError(f"reduce must be one of "
                             f"{', '.join(backdoor_detectors.REDUCERS)}")

    def fingerprint(self) -> str:
        d = asdict(self)
        d["sweep"] = self.sweep.fingerprint()
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def default_out(c: BackdoorDetectConfig) -> Path:
    s = c.sweep
    return Path("results") / (f"detect-{s.strategy}-{s.target}-s{s.seeds}-"
                              f"{c.fingerprint()}")


def _chunk_size(p, n: int) -> int:
    """The sweep's replicas per chunk (`train_local.chunk_size`, without
    writing a manifest), for n replicas."""
    c = p.config
    recipe = p.recipe()
    devices = train_local.local_devices(p)
    n_dev = 1 if devices is None else len(devices)
    size = c.replicas_per_step or n_dev * memory.auto_replicas_per_step(
        recipe.batch_size, recipe.eval_batch_size)
    return sharding.round_up(len(train_local.chunks(list(range(n)), size)[0]),
                             n_dev)


def run_backdoor_detect(c: BackdoorDetectConfig, *,
                        log=lambda s: print(s, file=sys.stderr)) -> Path:
    """Run (or continue) a backdoor detect run; returns its results folder."""
    t0 = time.time()
    out = Path(c.sweep.out) if c.sweep.out else default_out(c)
    sweep_cfg = c.sweep.replace(out=str(out / "sweep"), report=False, mlflow=None)
    p = prepare(sweep_cfg)
    results.prepare_dir(out)
    meta_path = out / "detect.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("fingerprint") != c.fingerprint():
            raise SweepError(f"{out} holds a different detect run; use another --out "
                             "or the original options")
    results.prepare_dir(p.out)
    p = perturbation.attach(p, log=log)  # the clean-label attack's copies
    bd = p.backdoor
    meta = {"fingerprint": c.fingerprint(), "kind": "backdoor", "config": asdict(c),
            "resolved_counts": list(p.grid.counts), "seeds_list": list(p.grid.seeds),
            "class_names": list(p.dataset.class_names), "target_id": int(bd.target),
            "source_id": -1 if bd.source is None else int(bd.source),
            "n_train": int(len(p.train_labels)), "data_hash": p.dataset.content_hash,
            **environment()}
    results.write_json(meta, meta_path)

    t = time.time()
    metrics, suspects = train_and_inspect(c, p, out, log=log)
    log(f"poisoned replicas and detectors: {time.time() - t:.0f} s")
    results.write_parquet(metrics, out / "backdoor_metrics.parquet")
    results.write_parquet(suspects, out / "backdoor_suspects.parquet")
    per_seed = backdoor_tables.grade(suspects)
    results.write_parquet(per_seed, out / "detection_seeds.parquet")
    results.write_parquet(backdoor_tables.summary(per_seed, level=c.level),
                          out / "detection.parquet")
    if c.repair:
        t = time.time()
        repaired = train_repaired(c, p, out, suspects, log=log)
        log(f"repaired replicas: {time.time() - t:.0f} s")
        results.write_parquet(repaired, out / "repair_metrics.parquet")
        results.write_parquet(
            backdoor_tables.repair_table(metrics, repaired, level=c.level),
            out / "repair.parquet")
    meta["status"] = "complete"
    meta["seconds"] = round(time.time() - t0, 1)
    results.write_json(meta, meta_path)
    return out


def trained_features(predict, params, stored: np.ndarray, stamps, trigger,
                     eval_batch: int) -> np.ndarray:
    """Each replica's penultimate features of its training images as it trained
    on them.

    Args:
      predict: `engine.make_predict(recipe)`.
      params: the chunk's parameters (R replicas).
      stored: uint8 (N', H, W, C) the engine's stored images (N' >= N).
      stamps: the chunk's `Stamps` (host): mask (R, N), rows (R, N) or None.
      trigger: the backdoor's `Trigger`.
      eval_batch: the recipe's eval batch size (predict's batch).
    Returns:
      (R, N, 512) float32: image i of replica r is stored row rows[r, i],
      stamped when mask[r, i].
    """
    pad = -len(stored) % eval_batch
    padded = np.concatenate([stored, np.zeros((pad, *stored.shape[1:]), np.uint8)])
    stamped = np.asarray(triggers.stamp(padded, np.ones(len(padded), bool), trigger))
    _, plain = jax.device_get(predict(params, jax.device_put(padded)))
    _, marked = jax.device_get(predict(params, jax.device_put(stamped)))
    mask = np.asarray(stamps.mask, bool)  # (R, N)
    r, n = mask.shape
    rows = (np.broadcast_to(np.arange(n), (r, n)) if stamps.rows is None
            else np.asarray(stamps.rows))
    take = np.arange(r)[:, None]
    return np.where(mask[..., None], marked[take, rows], plain[take, rows])


def inspect(feats: np.ndarray, labels: np.ndarray, target: int, *, epsilon: int,
            c: BackdoorDetectConfig) -> dict:
    """Both detectors on one replica's target class: scores and flags (N,)."""
    ss, ss_flag = backdoor_detectors.spectral_signatures(
        feats, labels, expected_poisoned=epsilon, classes=target,
        multiplier=c.multiplier)
    ac, ac_flag = backdoor_detectors.activation_clustering(
        feats, labels, classes=target, reduce=c.reduce,
        size_threshold=c.size_threshold)
    return {"spectral_score": ss, "spectral_flag": ss_flag,
            "clustering_score": ac, "clustering_flag": ac_flag}


def train_and_inspect(c: BackdoorDetectConfig, p, out: Path, *, log
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train every replica of the sweep as the sweep does, and run the
    detectors on each one's features. Returns (metrics rows like the sweep's
    metrics.parquet, suspects: one row per replica x target-class image)."""
    bd = p.backdoor
    n_rep = p.grid.size
    size = _chunk_size(p, n_rep)
    recipe = p.recipe()
    positive = [n for n in p.grid.counts if n > 0]
    engine = predict = None
    frames, suspects = [], []
    for chunk in train_local.chunks(list(range(n_rep)), size):
        cid = results.chunk_id(chunk)
        mpath = out / results.CHUNKS / f"bd-poisoned-{cid}.parquet"
        spath = out / results.CHUNKS / f"bd-suspects-{cid}.parquet"
        if not (mpath.exists() and spath.exists()):
            if engine is None:
                engine = build_engine(p, train_local.local_devices(p))
                predict = engine_lib.make_predict(recipe)
            t = time.time()
            # As train_local.train_chunk: padded to the chunk size, same inputs.
            padded = chunk + [chunk[-1]] * (size - len(chunk))
            seeds = np.array([p.grid.replica(i)[0] for i in padded])
            streams = np.array([p.grid.stream(i) for i in padded])
            keys = engine_lib.replica_keys(seeds, streams)
            labels = np.stack([p.replica_labels(i) for i in padded])
            stamps = p.stamps(padded)
            state, history = engine.train(labels, keys, p.config.epochs,
                                          stamps=stamps)
            metrics, _ = results.chunk_frames(
                replicas=chunk, counts=[p.grid.replica(i)[1] for i in chunk],
                seeds=[p.grid.replica(i)[0] for i in chunk], paired=p.grid.paired,
                class_names=p.dataset.class_names, history=history,
                backdoor=(bd.target, bd.source))
            feats = trained_features(predict, state.params, p.stored_images(),
                                     stamps, bd.trigger, recipe.eval_batch_size)
            parts = []
            for j, i in enumerate(chunk):
                seed, count = p.grid.replica(i)
                given = labels[j]
                rows = np.flatnonzero(given == bd.target)
                # The clean twin: the defender's bound is the smallest count.
                epsilon = count if count else min(positive)
                found = inspect(feats[j], given, bd.target, epsilon=epsilon, c=c)
                truth = np.asarray(stamps.mask[j], bool)
                parts.append(pd.DataFrame({
                    "replica": np.int32(i), "count": np.int32(count),
                    "seed": np.int32(seed), "index": rows.astype(np.int64),
                    "row": p.train_rows[rows].astype(np.int64),
                    "true_label": p.train_labels[rows].astype(np.int16),
                    "poisoned": truth[rows],
                    **{k: v[rows] for k, v in found.items()}}))
            results.write_parquet(pd.concat(parts, ignore_index=True), spath)
            results.write_parquet(metrics, mpath)
            log(f"poisoned replicas {chunk[0] + 1}-{chunk[-1] + 1} of {n_rep}: "
                f"{time.time() - t:.0f} s")
        frames.append(pd.read_parquet(mpath))
        suspects.append(pd.read_parquet(spath))
    return (pd.concat(frames, ignore_index=True),
            pd.concat(suspects, ignore_index=True))


def train_repaired(c: BackdoorDetectConfig, p, out: Path, suspects: pd.DataFrame,
                   *, log) -> pd.DataFrame:
    """Retrain every poisoned replica without each detector's flagged images.

    The replica's keys, labels and stamps (its flagged images are simply left
    out of its subset), so repaired - poisoned is paired by seed. Returns
    metrics rows like the sweep's with `detector`, `n_removed`,
    `n_poison_removed`.
    """
    bd = p.backdoor
    replicas = [i for i in range(p.grid.size) if p.grid.replica(i)[1] > 0]
    cells = [(i, d) for d in DETECTORS for i in replicas]
    n = len(p.train_labels)
    flags = {}
    for (i, d), g in _by_replica(suspects):
        keep = np.ones(n, bool)
        keep[g["index"].to_numpy()] = ~g[f"{d}_flag"].to_numpy(bool)
        flags[(i, d)] = keep
    size = _chunk_size(p, len(cells))
    recipe = p.recipe()
    engine = None
    frames = []
    for ids in train_local.chunks(list(range(len(cells))), size):
        path = out / results.CHUNKS / f"bd-repair-{results.chunk_id(ids)}.parquet"
        if not path.exists():
            if engine is None:
                engine = engine_lib.SubsetEngine(
                    recipe, p.stored_images(), p.dataset.test_images,
                    p.dataset.test_labels, trigger=bd.trigger)
            t = time.time()
            padded = [cells[k] for k in ids + [ids[-1]] * (size - len(ids))]
            seeds = np.array([p.grid.replica(i)[0] for i, _ in padded])
            streams = np.array([p.grid.stream(i) for i, _ in padded])
            keys = engine_lib.replica_keys(seeds, streams)
            labels = np.stack([p.replica_labels(i) for i, _ in padded])
            stamps = p.stamps([i for i, _ in padded])
            keep = np.stack([flags[cell] for cell in padded])
            _, history, _ = engine.train(labels, keys, p.config.epochs,
                                         subsets=folds.keep_subsets(keep),
                                         evaluate="last", stamps=stamps)
            # Cell ids as the replica column (a replica repairs once per
            # detector), then the replica and its detector.
            metrics, _ = results.chunk_frames(
                replicas=ids, counts=[p.grid.replica(cells[k][0])[1] for k in ids],
                seeds=[p.grid.replica(cells[k][0])[0] for k in ids],
                paired=p.grid.paired, class_names=p.dataset.class_names,
                history=history, backdoor=(bd.target, bd.source))
            cell = metrics["replica"].to_numpy()
            removed = {k: ~keep[j] for j, k in enumerate(ids)}
            poisoned = {k: np.asarray(stamps.mask[j], bool) for j, k in enumerate(ids)}
            metrics["replica"] = [cells[k][0] for k in cell]
            metrics["detector"] = [cells[k][1] for k in cell]
            metrics["n_removed"] = [int(removed[k].sum()) for k in cell]
            metrics["n_poison_removed"] = [int((removed[k] & poisoned[k]).sum())
                                           for k in cell]
            results.write_parquet(metrics, path)
            log(f"repaired replicas {ids[0] + 1}-{ids[-1] + 1} of {len(cells)}: "
                f"{time.time() - t:.0f} s")
        frames.append(pd.read_parquet(path))
    return pd.concat(frames, ignore_index=True)


def _by_replica(suspects: pd.DataFrame):
    for i, g in suspects[suspects["count"] > 0].groupby("replica"):
        for d in DETECTORS:
            yield (int(i), d), g

