"""A certify run: partition aggregation trained as replicas, its certificates
beside the undefended sweep under the same flips.

For every seed s (the partition hash's salt and the base models' keys) and
every k of `--partitions`, the training set is split by a hash of each image's
bytes; one base model per partition (DPA; Finite Aggregation: k*d models on d
buckets each) trains as an isolated replica of the engine. Their test votes
give each test image a prediction and a certified radius. Under each flip
count of the sweep, only the models whose images hold a flipped label are
retrained (the rest are the clean run's, by id); the ensemble's accuracy under
the attack is set beside the clean ensemble's certified accuracy at that
radius, and beside an ordinary sweep (OUT/sweep/) of single models trained on
all the data with the same flips.

Results (OUT/): certificates.parquet (per test image), certified.parquet and
certified_seeds.parquet (the curves), attack.parquet, price.parquet,
models.parquet, ensembles.parquet, certify.json; chunks/ holds the trained
models' test outputs, written atomically, so an interrupted run continues.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sweep import results
from sweep.defences.certify import (
    aggregation,
    base_models,
    certify_tables,
    partition,
)
from sweep.defences.certify.base_models import BaseModel, Scheme
from sweep.engine.memory import auto_replicas_per_step
from sweep.errors import SweepError
from sweep.experiment.config import BACKDOORS, Config
from sweep.experiment.prepare import prepare, recipe_for
from sweep.experiment.running import run_sweep
from sweep.results import lock
from sweep.results.environment import environment

AGGREGATIONS = ("dpa", "dpa-roe", "fa", "fa-roe")
EVAL_BATCH = 250  # test images per evaluation step of a chunk of base models


@dataclass(frozen=True)
class CertifyConfig:
    """A certify run: the sweep whose data, recipe and flips it takes, and the
    defence's own settings."""

    sweep: Config
    partitions: tuple[int, ...] = (50,)  # k: base models (partitions) per ensemble
    aggregations: tuple[str, ...] = ("dpa", "dpa-roe")  # of AGGREGATIONS
    fa_copies: int = 8  # d of Finite Aggregation: k*d models, d buckets each
    base_epochs: int | None = None  # base models' epochs; None: the sweep's
    baseline: bool = True  # train the undefended sweep beside (OUT/sweep/)
    level: float = 0.95  # intervals over seeds

    def __post_init__(self):
        ks = tuple(int(k) for k in self.partitions)
        if not ks or any(k < 2 for k in ks) or len(set(ks)) != len(ks):
            raise SweepError(f"--partitions must be distinct whole numbers >= 2, "
                             f"got {','.join(map(str, self.partitions)) or 'none'}")
        object.__setattr__(self, "partitions", tuple(sorted(ks)))
        methods = tuple(self.aggregations)
        unknown = [m for m in methods if m not in AGGREGATIONS]
        if unknown or not methods or len(set(methods)) != len(methods):
            raise SweepError(f"--aggregation must list some of "
                             f"{', '.join(AGGREGATIONS)}, each once")
        object.__setattr__(self, "aggregations",
                           tuple(m for m in AGGREGATIONS if m in methods))
        if self.fa_copies < 2:
            raise SweepError(f"--fa-copies must be at least 2 (1 is DPA), got "
                             f"{self.fa_copies}")
        if self.base_epochs is not None and self.base_epochs < 1:
            raise SweepError(f"--base-epochs must be at least 1, got "
                             f"{self.base_epochs}")
        if not 0 < self.level < 1:
            raise SweepError(f"--level must be in (0, 1), got {self.level}")
        s = self.sweep
        if s.model != "cnn":
            raise SweepError("certify trains SimpleCNN base models; --model head "
                             "is not supported")
        if s.strategy in BACKDOORS:
            # The base models train without stamps (isolated subsets take no
            # trigger), so a backdoor's poisoned images would not be what they saw.
            raise SweepError(f"certify covers label attacks (--attack flip or swap), "
                             f"not the trigger backdoor {s.strategy}")
        if s.pairs is not None:
            raise SweepError("certify takes one --source/--target pair, not --pairs")
        if s.cluster is not None:
            raise SweepError("certify runs on this host; --cluster is not supported")
        if s.devices not in (None, 1):
            raise SweepError("certify trains on one device; --devices is not "
                             "supported")

    @property
    def epochs(self) -> int:
        return self.base_epochs or self.sweep.epochs

    def schemes(self) -> list[Scheme]:
        d_values = ([1] if {"dpa", "dpa-roe"} & set(self.aggregations) else []) + (
            [self.fa_copies] if {"fa", "fa-roe"} & set(self.aggregations) else [])
        return [Scheme(k, d) for k in self.partitions for d in d_values]

    def fingerprint(self) -> str:
        """What the base models are a function of besides their ids: the sweep
        (data, flips, recipe) and the base models' epochs. Partitions and
        aggregations may change between runs of one folder: a rerun with more
        trains only the models it lacks."""
        blob = json.dumps({"sweep": self.sweep.fingerprint(),
                           "base_epochs": self.epochs}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def default_out(c: CertifyConfig) -> Path:
    s = c.sweep
    return Path("results") / (f"certify-{s.source}-{s.target}-s{s.seeds}-"
                              f"{c.fingerprint()}")


def chunk_size(c: CertifyConfig, batch_size: int, n_models: int) -> int:
    """Base models per chunk: at most --replicas-per-step, else what fits the
    memory, evened out over the chunks `n_models` need (21 at 19 per chunk
    train as 11 + 10, not 19 + 2 padded to 19); at least 2."""
    most = c.sweep.replicas_per_step or auto_replicas_per_step(batch_size,
                                                               EVAL_BATCH)
    n = max(1, n_models)
    return max(2, math.ceil(n / math.ceil(n / max(1, most))))


def plan(c: CertifyConfig, p) -> tuple[dict, dict[str, BaseModel], dict]:
    """Every ensemble's model ids and the distinct models they need.

    Returns:
      (ensembles, models, layouts): ensembles[(seed, scheme, count)] = ids
      (K,); models[id] = BaseModel, in first-seen order (clean first);
      layouts[(seed, scheme)] = base_models.Layout.
    """
    ensembles, models, layouts = {}, {}, {}
    for seed in p.grid.seeds:
        hashes = None
        for scheme in c.schemes():
            if hashes is None:
                hashes = partition.image_hashes(p.train_images, seed=seed)
            lay = base_models.layout(p.train_images, scheme, seed, hashes)
            layouts[(seed, scheme)] = lay
            clean = p.labels[p.poison_key(seed, 0)]
            for count in p.grid.counts:
                labels = p.labels[p.poison_key(seed, count)]
                ids = base_models.ensemble_ids(lay, labels, seed, scheme)
                ensembles[(seed, scheme, count)] = ids
                for i, mid in enumerate(ids):
                    if mid not in models:
                        rows = lay.index[i, : lay.length[i]].astype(np.int32)
                        models[mid] = BaseModel(
                            mid, seed, scheme, i, count, rows,
                            int((labels[rows] != clean[rows]).sum()))
    return ensembles, models, layouts


def run_certify(c: CertifyConfig, *, log=lambda s: print(s, file=sys.stderr)) -> Path:
    """Run (or continue) a certify run; returns its results folder."""
    t0 = time.time()
    out = Path(c.sweep.out) if c.sweep.out else default_out(c)
    sweep_cfg = c.sweep.replace(out=str(out / "sweep"), report=False, mlflow=None)
    p = prepare(sweep_cfg)
    for scheme in c.schemes():  # before anything is written
        if scheme.n_models > len(p.train_labels):
            raise SweepError(f"{scheme.n_models} base models (k={scheme.k}, "
                             f"d={scheme.d}) for {len(p.train_labels):,} "
                             "training images; use fewer partitions")
    results.prepare_dir(out)
    with lock.hold(out):
        results.remove_tmp(out)
        meta_path = out / "certify.json"
        if meta_path.exists():
            old = json.loads(meta_path.read_text())
            if old.get("fingerprint") != c.fingerprint():
                raise SweepError(f"{out} holds a different certify run; use another "
                                 "--out or the original options")
        meta = {"fingerprint": c.fingerprint(), "config": asdict(c),
                "resolved_counts": list(p.grid.counts),
                "seeds_list": list(p.grid.seeds),
                "class_names": list(p.dataset.class_names),
                "source_id": p.source_id, "target_id": p.target_id,
                "n_train": int(len(p.train_labels)),
                "n_test": int(len(p.dataset.test_labels)),
                "data_hash": p.dataset.content_hash, **environment()}
        results.write_json(meta, meta_path)
        ensembles, models, layouts = plan(c, p)
        done = base_models.done_models(out)
        todo = [m for i, m in models.items() if i not in done]
        recipe = base_models.certify_recipe(
            recipe_for(sweep_cfg, n_train=len(p.train_labels),
                       n_classes=len(p.dataset.class_names),
                       n_test=len(p.dataset.test_labels)),
            batch_size=c.sweep.batch_size,
            eval_batch_size=min(EVAL_BATCH, len(p.dataset.test_labels)))
        size = chunk_size(c, recipe.batch_size, len(todo))
        log(f"base models: {len(models)} distinct over {len(ensembles)} ensembles; "
            f"{len(models) - len(todo)} on disk, {len(todo)} to train, "
            f"{size} per chunk")
        t = time.time()
        base_models.train_models(
            todo, recipe=recipe, epochs=c.epochs, train_images=p.train_images,
            labels_of=lambda seed, count: p.labels[p.poison_key(seed, count)],
            test_images=p.dataset.test_images, test_labels=p.dataset.test_labels,
            out=out, size=size, log=log)
        meta["base_models_s"] = round(time.time() - t, 1)
        if c.baseline:
            t = time.time()
            run_sweep.run(sweep_cfg, log=log)
            meta["baseline_s"] = round(time.time() - t, 1)
        t = time.time()
        write_tables(c, p, out, ensembles, models, layouts)
        meta["tables_s"] = round(time.time() - t, 1)
        meta["status"] = "complete"
        meta["seconds"] = round(time.time() - t0, 1)
        results.write_json(meta, meta_path)
    return out


def certify_ensemble(method: str, ranks: np.ndarray, shifts: np.ndarray,
                     n_classes: int) -> aggregation.Certified:
    """One aggregation's predictions and radii from the models' ranks (K, n, C)."""
    if method == "dpa":
        return aggregation.dpa_certify(ranks.argmax(-1), num_classes=n_classes)
    if method == "fa":
        return aggregation.fa_certify(ranks.argmax(-1), shifts=shifts,
                                      num_classes=n_classes)
    if method == "dpa-roe":
        return aggregation.roe_dpa_certify(ranks)
    if method == "fa-roe":
        return aggregation.roe_fa_certify(ranks, shifts=shifts)
    raise ValueError(f"unknown aggregation {method!r}")


def methods_of(c: CertifyConfig, scheme: Scheme) -> list[str]:
    family = ("dpa", "dpa-roe") if scheme.d == 1 else ("fa", "fa-roe")
    return [m for m in c.aggregations if m in family]


def write_tables(c: CertifyConfig, p, out: Path, ensembles: dict, models: dict,
                 layouts: dict) -> None:
    """Certificates per test image, then the curves, the attack and price tables."""
    ranks, facts = base_models.load_models(out, list(models))
    test_labels = np.asarray(p.dataset.test_labels)
    n_classes = len(p.dataset.class_names)
    certs, ens_rows = [], []
    for (seed, scheme, count), ids in ensembles.items():
        stacked = np.stack([ranks[i] for i in ids])  # (K, n, C)
        clean_ids = ensembles[(seed, scheme, 0)]
        n_flipped = int((p.labels[p.poison_key(seed, count)]
                         != p.labels[p.poison_key(seed, 0)]).sum())
        ens_rows.append({"seed": seed, "k": scheme.k, "d": scheme.d, "count": count,
                         "n_flipped": n_flipped, "n_models": len(ids),
                         "n_retrained": sum(a != b for a, b in zip(ids, clean_ids)),
                         "smallest_partition": int(layouts[(seed, scheme)]
                                                   .length.min()),
                         "largest_partition": int(layouts[(seed, scheme)]
                                                  .length.max())})
        for method in methods_of(c, scheme):
            cert = certify_ensemble(method, stacked, layouts[(seed, scheme)].shifts,
                                    n_classes)
            certs.append(pd.DataFrame({
                "k": np.int32(scheme.k), "d": np.int16(scheme.d), "method": method,
                "seed": np.int32(seed), "count": np.int32(count),
                "n_flipped": np.int32(n_flipped),
                "test_index": np.arange(len(test_labels), dtype=np.int32),
                "label": test_labels.astype(np.int16),
                "prediction": cert.prediction.astype(np.int16),
                "runner_up": cert.runner_up.astype(np.int16),
                "margin": cert.margin.astype(np.int32),
                "radius": cert.radius.astype(np.int32),
                "correct": cert.prediction == test_labels}))
    certs = pd.concat(certs, ignore_index=True)
    bad = certify_tables.violations(certs)
    if len(bad):
        r = bad.iloc[0]
        raise SweepError(f"{len(bad)} certified predictions changed under an attack "
                         f"within their radius (e.g. {r['method']}, k={r['k']}, seed "
                         f"{r['seed']}, count {r['count']}, test image "
                         f"{r['test_index']}): a bug, please report it")
    names = list(p.dataset.class_names)
    results.write_parquet(certs, out / "certificates.parquet")
    results.write_parquet(pd.DataFrame(ens_rows), out / "ensembles.parquet")
    model_rows, base_acc = [], []
    for mid, m in models.items():
        votes = ranks[mid].argmax(-1)
        model_rows.append({"id": mid, "seed": m.seed, "k": m.scheme.k,
                           "d": m.scheme.d, "model": m.model, "count": m.count,
                           "n_images": len(m.rows), "n_flipped": m.n_flipped,
                           "test_accuracy": 100.0 * float((votes == test_labels)
                                                          .mean()),
                           **facts[mid]})
        if m.count == 0:
            for class_id in [-1, *range(n_classes)]:
                sel = slice(None) if class_id < 0 else test_labels == class_id
                base_acc.append({"k": m.scheme.k, "d": m.scheme.d, "seed": m.seed,
                                 "class_id": class_id, "accuracy": 100.0 * float(
                                     (votes[sel] == test_labels[sel]).mean())})
    results.write_parquet(pd.DataFrame(model_rows), out / "models.parquet")
    curves, per_seed = certify_tables.certified_curves(certs, level=c.level,
                                                       class_names=names)
    results.write_parquet(curves, out / "certified.parquet")
    results.write_parquet(per_seed, out / "certified_seeds.parquet")
    sweep_acc = None
    if (out / "sweep" / "metrics.parquet").exists():
        sweep_acc = certify_tables.sweep_accuracy(
            pd.read_parquet(out / "sweep" / "metrics.parquet"))
    results.write_parquet(
        certify_tables.attack_table(certs, sweep_acc, level=c.level,
                                    class_names=names), out / "attack.parquet")
    results.write_parquet(
        certify_tables.price_table(certs, pd.DataFrame(base_acc), sweep_acc,
                                   level=c.level, class_names=names),
        out / "price.parquet")
