"""A detect run: out-of-fold models, detectors, grading, repair, tables.

For each count x seed, K fold replicas (the poisoned set minus one fold each)
train together in the engine and predict their held-out fold, so every image
gets out-of-fold probabilities and features; their training margins give the
area under the margin. The clean and poisoned full-data twins are an ordinary
sweep (in `OUT/sweep/`), and the repaired replicas (the poisoned set minus one
detector's flags, or with them relabelled to the out-of-fold predicted class)
train with the twins' keys, so repaired - clean is paired like poisoned - clean.

Results (OUT/): suspects.parquet, detection.parquet, detection_seeds.parquet,
repair.parquet, repair_metrics.parquet, detect.json; chunks/ holds the
per-chunk pieces, each written atomically, so an interrupted run continues.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sweep import engine as engine_lib
from sweep import results, stats
from sweep.defences.detect import detectors, folds, scoring
from sweep.engine.memory import auto_replicas_per_step
from sweep.errors import SweepError
from sweep.experiment.config import BACKDOORS, Config
from sweep.experiment.prepare import prepare, recipe_for
from sweep.experiment.running import run_sweep
from sweep.experiment.running.train_local import chunks
from sweep.results.environment import environment

FOLD_STREAM = 1000  # fold replicas' key streams: 1000 + fold, apart from twins' 0
# Repairs: retrain without the flagged images, or with them relabelled to the
# out-of-fold predicted class. Their chunk files' prefixes ("repair-" is the
# removal's name from before relabelling existed; kept so old runs resume).
REPAIR_METHODS = ("remove", "relabel")
REPAIR_FILES = {"remove": "repair", "relabel": "relabel"}
# Options added after runs were made: left out of the fingerprint at their
# default, so an older run's folder continues under the newer code.
LATER_DEFAULTS = {"repair_methods": REPAIR_METHODS}


@dataclass(frozen=True)
class DetectConfig:
    """A detect run: the sweep it poisons and trains like, plus the defence."""

    sweep: Config
    folds: int = 4  # out-of-fold models per count x seed
    fold_seed: int = 0  # the K-fold split (redrawn per training seed from this)
    knn_k: int = 10  # neighbours of deep k-NN
    repair_with: str = "cleanlab"  # detector whose flags repair; "none"
    level: float = 0.95  # intervals over seeds
    repair_methods: tuple[str, ...] = REPAIR_METHODS  # remove and/or relabel

    def __post_init__(self):
        if self.folds < 2:
            raise SweepError(f"--folds must be at least 2, got {self.folds}")
        if self.knn_k < 1:
            raise SweepError(f"--knn-k must be at least 1, got {self.knn_k}")
        if self.repair_with not in (*detectors.DETECTORS, "none"):
            raise SweepError(f"--repair-with must be one of "
                             f"{', '.join((*detectors.DETECTORS, 'none'))}")
        methods = tuple(self.repair_methods)
        unknown = [m for m in methods if m not in REPAIR_METHODS]
        if unknown or not methods or len(set(methods)) != len(methods):
            raise SweepError(f"--repair-method must be one or both of "
                             f"{', '.join(REPAIR_METHODS)}, each once")
        # One canonical order: "relabel,remove" is the same run as the default.
        object.__setattr__(self, "repair_methods",
                           tuple(m for m in REPAIR_METHODS if m in methods))
        if self.sweep.poison_per_seed:
            raise SweepError("detect pools seeds (the ensemble, the suspect lists); "
                             "--poison-per-seed is not supported")
        if self.sweep.seeds < 2:
            raise SweepError("detect needs --seeds 2 or more (intervals over seeds)")
        if self.sweep.strategy in BACKDOORS:  # its fold models would not be stamped
            raise SweepError("DetectConfig finds label flips (--attack flip or "
                             "swap); a backdoor's detect run is "
                             "backdoor_run.BackdoorDetectConfig")

    def fingerprint(self) -> str:
        d = asdict(self)
        d["sweep"] = self.sweep.fingerprint()
        for name, default in LATER_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def default_out(c: DetectConfig) -> Path:
    s = c.sweep
    return Path("results") / (f"detect-{s.source}-{s.target}-s{s.seeds}-k{c.folds}-"
                              f"{c.fingerprint()}")


def _recipe(p, c: Config):
    return recipe_for(c, n_train=len(p.train_labels),
                      n_classes=len(p.dataset.class_names),
                      n_test=len(p.dataset.test_labels))


def _chunk_size(c: Config, recipe, n: int) -> int:
    size = c.replicas_per_step or auto_replicas_per_step(
        recipe.batch_size, recipe.eval_batch_size)
    return len(chunks(list(range(n)), size)[0])


def _pad(chunk: list, size: int) -> list:
    return chunk + [chunk[-1]] * (size - len(chunk))


def run_detect(c: DetectConfig, *, log=lambda s: print(s, file=sys.stderr)) -> Path:
    """Run (or continue) a detect run; returns its results folder."""
    t0 = time.time()
    out = Path(c.sweep.out) if c.sweep.out else default_out(c)
    detectors.require_cleanlab()  # before training: cleanlab scores every run
    sweep_cfg = c.sweep.replace(out=str(out / "sweep"), report=False, mlflow=None)
    p = prepare(sweep_cfg)
    n_train = len(p.train_labels)
    if c.folds > n_train:  # an empty fold has no out-of-fold predictions to give
        raise SweepError(f"--folds {c.folds} is more than the {n_train:,} training "
                         "images; every fold must hold at least one image")
    results.prepare_dir(out)
    meta_path = out / "detect.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("fingerprint") != c.fingerprint():
            raise SweepError(f"{out} holds a different detect run; use another --out "
                             "or the original options")
    meta = {"fingerprint": c.fingerprint(), "config": asdict(c),
            "resolved_counts": list(p.grid.counts), "seeds_list": list(p.grid.seeds),
            "class_names": list(p.dataset.class_names), "source_id": p.source_id,
            "target_id": p.target_id, "n_train": int(len(p.train_labels)),
            "data_hash": p.dataset.content_hash, **environment()}
    results.write_json(meta, meta_path)

    fold_of = {s: folds.assign_folds(len(p.train_labels), c.folds,
                                     folds.fold_rng(c.fold_seed, s))
               for s in p.grid.seeds}
    t = time.time()
    oof = train_fold_models(c, p, out, fold_of, log=log)
    log(f"out-of-fold models: {time.time() - t:.0f} s")
    t = time.time()
    run_sweep.run(sweep_cfg, log=log)
    log(f"clean and poisoned twins: {time.time() - t:.0f} s")
    suspects = score_images(c, p, oof, fold_of)
    results.write_parquet(suspects, out / "suspects.parquet")
    per_seed = grade_detectors(suspects)
    results.write_parquet(per_seed, out / "detection_seeds.parquet")
    results.write_parquet(scoring.summarize(per_seed, level=c.level),
                          out / "detection.parquet")
    if c.repair_with != "none":
        t = time.time()
        repair_metrics = train_repaired(c, p, out, suspects, log=log)
        log(f"repaired replicas: {time.time() - t:.0f} s")
        results.write_parquet(repair_metrics, out / "repair_metrics.parquet")
        twins = pd.read_parquet(out / "sweep" / "metrics.parquet")
        results.write_parquet(
            repair_table(twins, repair_metrics, suspects, c.repair_with,
                         source=p.source_id, level=c.level),
            out / "repair.parquet")
    meta["status"] = "complete"
    meta["seconds"] = round(time.time() - t0, 1)
    results.write_json(meta, meta_path)
    return out


def train_fold_models(c: DetectConfig, p, out: Path, fold_of: dict, *, log) -> dict:
    """Train every (count, seed, fold) replica; returns per (count, seed) arrays.

    Returns:
      {(count, seed): {"probs": (N, K) out-of-fold, "knn": (N,), "knn_flag": (N,),
       "margin_sum": (N,), "margin_n": (N,)}}
    """
    sc = c.sweep
    grid = [(count, seed, f) for seed in p.grid.seeds for count in p.grid.counts
            for f in range(c.folds)]
    recipe = _recipe(p, sc)
    size = _chunk_size(sc, recipe, len(grid))
    subsets = {s: folds.training_subsets(fold_of[s], c.folds) for s in p.grid.seeds}
    engine = None
    n_classes = recipe.n_classes
    for start in range(0, len(grid), size):
        ids = list(range(start, min(start + size, len(grid))))
        path = out / results.CHUNKS / f"oof-{results.chunk_id(ids)}.npz"
        if path.exists():
            continue
        if engine is None:
            engine = engine_lib.SubsetEngine(recipe, p.train_images,
                                             p.dataset.test_images,
                                             p.dataset.test_labels,
                                             record_margins=True)
        t = time.time()
        cells = [grid[i] for i in _pad(ids, size)]
        keys = engine_lib.replica_keys(np.array([s for _, s, _ in cells]),
                                       np.array([FOLD_STREAM + f for _, _, f in cells]))
        labels = np.stack([p.labels[p.poison_key(s, n)] for n, s, _ in cells])
        sub = engine_lib.Subsets(
            np.stack([subsets[s].index[f] for _, s, f in cells]),
            np.stack([subsets[s].length[f] for _, s, f in cells]))
        state, history, margin = engine.train(labels, keys, sc.epochs, subsets=sub,
                                              evaluate=False)
        logp, feats = engine.predict(state.params, p.train_images)
        arrays = {}
        for j, i in enumerate(ids):
            count, seed, f = grid[i]
            held = fold_of[seed] == f
            knn, knn_flag = detectors.deep_knn(
                feats[j, held], labels[j, held], feats[j, ~held], labels[j, ~held],
                k=c.knn_k, n_classes=n_classes)
            arrays[f"{i}_probs"] = np.exp(logp[j, held]).astype(np.float32)
            arrays[f"{i}_knn"] = knn
            arrays[f"{i}_knn_flag"] = knn_flag
            arrays[f"{i}_margin"] = margin[j]
            arrays[f"{i}_train_loss"] = np.float64(history[-1].train_loss[j])
        results.atomic_write_npz(path, **arrays)
        log(f"fold models {ids[0] + 1}-{ids[-1] + 1} of {len(grid)}: "
            f"{time.time() - t:.0f} s")
    # Gather every chunk's pieces into whole-training-set arrays.
    n = len(p.train_labels)
    oof = {(count, seed): {"probs": np.full((n, n_classes), np.nan, np.float32),
                           "knn": np.full(n, np.nan), "knn_flag": np.zeros(n, bool),
                           "margin_sum": np.zeros(n), "margin_n": np.zeros(n)}
           for count in p.grid.counts for seed in p.grid.seeds}
    for start in range(0, len(grid), size):
        ids = list(range(start, min(start + size, len(grid))))
        with np.load(out / results.CHUNKS / f"oof-{results.chunk_id(ids)}.npz") as z:
            for i in ids:
                count, seed, f = grid[i]
                held = fold_of[seed] == f
                d = oof[(count, seed)]
                d["probs"][held] = z[f"{i}_probs"]
                d["knn"][held] = z[f"{i}_knn"]
                d["knn_flag"][held] = z[f"{i}_knn_flag"]
                d["margin_sum"] += z[f"{i}_margin"]
                d["margin_n"] += (~held) * sc.epochs
    return oof


def score_images(c: DetectConfig, p, oof: dict, fold_of: dict) -> pd.DataFrame:
    """suspects table: one row per count x seed x training image, every
    detector's score (higher = more suspect) and flag."""
    n = len(p.train_labels)
    true = p.train_labels
    frames = []
    for count in p.grid.counts:
        ens = np.mean([oof[(count, s)]["probs"] for s in p.grid.seeds], axis=0)
        given = p.labels[p.poison_key(p.grid.seeds[0], count)]
        ens_score, ens_flag = detectors.self_margin(given, ens)
        for seed in p.grid.seeds:
            d = oof[(count, seed)]
            given = p.labels[p.poison_key(seed, count)]
            if np.isnan(d["probs"]).any():
                raise SweepError(f"missing out-of-fold predictions for count {count}, "
                                 f"seed {seed}; rerun to finish the detect run")
            cl_score, cl_flag = detectors.confident_learning(given, d["probs"])
            m_score, m_flag = detectors.self_margin(given, d["probs"])
            a_score, a_flag = detectors.area_under_margin(d["margin_sum"],
                                                          d["margin_n"])
            frames.append(pd.DataFrame({
                "count": np.int32(count), "seed": np.int32(seed),
                "index": np.arange(n, dtype=np.int64),
                "row": p.train_rows.astype(np.int64),
                "fold": fold_of[seed].astype(np.int16),
                "given_label": given.astype(np.int16),
                "true_label": true.astype(np.int16),
                "poisoned": given != true,
                "pred_label": d["probs"].argmax(1).astype(np.int16),
                "p_given": d["probs"][np.arange(n), given],
                "score_cleanlab": cl_score, "flag_cleanlab": cl_flag,
                "score_margin": m_score, "flag_margin": m_flag,
                "score_aum": a_score, "flag_aum": a_flag,
                "score_knn": d["knn"], "flag_knn": d["knn_flag"],
                "score_ensemble": ens_score, "flag_ensemble": ens_flag,
                "ensemble_pred": ens.argmax(1).astype(np.int16),
            }))
    return pd.concat(frames, ignore_index=True)


def grade_detectors(suspects: pd.DataFrame) -> pd.DataFrame:
    """Per count (> 0) x detector x seed: every metric of `scoring.grade`.

    The ensemble pools all seeds, so it has one value per count (seed -1).
    """
    rows = []
    for (count, seed), g in suspects[suspects["count"] > 0].groupby(["count", "seed"]):
        truth = g["poisoned"].to_numpy()
        k = int(truth.sum())
        for det in detectors.DETECTORS:
            row = {"count": int(count), "detector": det,
                   "seed": -1 if det == "ensemble" else int(seed), "k": k}
            row.update(scoring.grade(g[f"score_{det}"].to_numpy(), truth,
                                     g[f"flag_{det}"].to_numpy(), k=k))
            rows.append(row)
    df = pd.DataFrame(rows)
    # The ensemble's rows are identical across seeds: keep one.
    return df.drop_duplicates(subset=["count", "detector", "seed"], ignore_index=True)


def repair_inputs(method: str, given: np.ndarray, flag: np.ndarray, pred: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,), keep (N,) bool) a repaired replica trains on.

    remove: the given labels, the flagged images left out; relabel: every
    image, the flagged ones labelled with their out-of-fold predicted class.
    """
    if method == "remove":
        return given, ~flag
    if method == "relabel":
        return np.where(flag, pred, given).astype(given.dtype), np.ones_like(flag)
    raise ValueError(f"unknown repair method {method!r}")


def train_repaired(c: DetectConfig, p, out: Path, suspects: pd.DataFrame, *, log
                   ) -> pd.DataFrame:
    """Retrain each count x seed repaired by every method of `c.repair_methods`:
    without the images `c.repair_with` flags (remove), or with them relabelled
    to the seed's out-of-fold predicted class (relabel).

    Same keys as the seed's clean and poisoned twins (stream 0 when paired), so
    a removal replica sees its twin's data order with the removed images left
    out, and each repair is paired like poisoned - clean. Returns metrics rows
    like the sweep's (results.chunk_frames) with a `method` column.
    """
    sc = c.sweep
    grid = [(count, seed) for seed in p.grid.seeds for count in p.grid.counts]
    recipe = _recipe(p, sc)
    size = _chunk_size(sc, recipe, len(grid))
    flag_col = f"flag_{c.repair_with}"
    flag, pred = {}, {}
    for (n, s), g in suspects.groupby(["count", "seed"]):
        g = g.sort_values("index")
        flag[(int(n), int(s))] = g[flag_col].to_numpy(bool)
        pred[(int(n), int(s))] = g["pred_label"].to_numpy()
    engine = None
    frames = []
    for method in c.repair_methods:
        prefix = REPAIR_FILES[method]
        for start in range(0, len(grid), size):
            ids = list(range(start, min(start + size, len(grid))))
            path = out / results.CHUNKS / f"{prefix}-{results.chunk_id(ids)}.parquet"
            if not path.exists():
                if engine is None:
                    engine = engine_lib.SubsetEngine(recipe, p.train_images,
                                                     p.dataset.test_images,
                                                     p.dataset.test_labels)
                t = time.time()
                cells = [grid[i] for i in _pad(ids, size)]
                seeds = np.array([s for _, s in cells])
                streams = np.array([0 if sc.paired else 1 + n for n, _ in cells])
                keys = engine_lib.replica_keys(seeds, streams)
                given = {cell: p.labels[p.poison_key(cell[1], cell[0])]
                         for cell in set(cells)}
                inputs = {cell: repair_inputs(method, given[cell], flag[cell],
                                              pred[cell]) for cell in given}
                labels = np.stack([inputs[cell][0] for cell in cells])
                sub = folds.keep_subsets(np.stack([inputs[cell][1] for cell in cells]))
                _, history, _ = engine.train(labels, keys, sc.epochs, subsets=sub,
                                             evaluate="last")
                metrics, _ = results.chunk_frames(
                    replicas=ids, counts=[grid[i][0] for i in ids],
                    seeds=[grid[i][1] for i in ids], paired=sc.paired,
                    class_names=p.dataset.class_names, history=history)
                changed = {i: int((~inputs[grid[i]][1]).sum()
                                  + (inputs[grid[i]][0] != given[grid[i]]).sum())
                           for i in ids}
                column = "n_removed" if method == "remove" else "n_relabelled"
                metrics[column] = metrics["replica"].map(changed)
                results.write_parquet(metrics, path)
                log(f"repaired replicas ({method}) {ids[0] + 1}-{ids[-1] + 1} of "
                    f"{len(grid)}: {time.time() - t:.0f} s")
            frame = pd.read_parquet(path)
            frame["method"] = method  # removal chunks from before had no column
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def repair_table(twins: pd.DataFrame, repaired: pd.DataFrame, suspects: pd.DataFrame,
                 detector: str, *, source: int, level: float) -> pd.DataFrame:
    """Per count x repair method x class at the last epoch: poisoned - clean and
    repaired - clean (and repaired - poisoned), paired over seeds, with t
    intervals; and what the defence flagged (flipped images caught, clean
    images and clean source-class images hit), mean over seeds. Relabel rows
    add the flagged flips given back their true class and the flagged clean
    images given a wrong one.

    `repaired` without a `method` column is a removal (runs from before
    relabelling).
    """
    last = int(twins["epoch"].max())
    acc = twins[(twins["epoch"] == last) & ~twins["diverged"]]
    acc = acc.pivot_table(index=["count", "seed"], columns="class_id",
                          values="accuracy")
    if "method" not in repaired:
        repaired = repaired.assign(method="remove")
    names = twins.drop_duplicates("class_id").set_index("class_id")["class_name"]
    flag = f"flag_{detector}"
    methods = [m for m in REPAIR_METHODS if m in set(repaired["method"])]

    def hit(g):
        counts = {
            "n_removed": int(g[flag].sum()),
            "n_poison_removed": int((g[flag] & g["poisoned"]).sum()),
            "n_clean_removed": int((g[flag] & ~g["poisoned"]).sum()),
            "n_clean_source_removed": int(
                (g[flag] & ~g["poisoned"] & (g["true_label"] == source)).sum())}
        if "relabel" in methods:
            moved = g[flag] & (g["pred_label"] != g["given_label"])
            counts["n_poison_restored"] = int(
                (moved & g["poisoned"] & (g["pred_label"] == g["true_label"])).sum())
            counts["n_clean_relabelled"] = int((moved & ~g["poisoned"]).sum())
        return pd.Series(counts)

    removed = suspects.groupby(["count", "seed"]).apply(hit, include_groups=False)
    rows = []
    for method in methods:
        r = repaired[repaired["method"] == method]
        rep = r[(r["epoch"] == r["epoch"].max()) & ~r["diverged"]]
        rep = rep.pivot_table(index=["count", "seed"], columns="class_id",
                              values="accuracy")
        for count in sorted(rep.index.get_level_values("count").unique()):
            seeds = [sd for sd in rep.loc[count].index
                     if (0, sd) in acc.index and (count, sd) in acc.index]
            clean = acc.loc[[(0, sd) for sd in seeds]].to_numpy()
            pois = acc.loc[[(count, sd) for sd in seeds]].to_numpy()
            fixed = rep.loc[[(count, sd) for sd in seeds]].to_numpy()
            rem = removed.loc[[(count, sd) for sd in seeds]].mean()
            if method != "relabel":
                rem = rem.drop(["n_poison_restored", "n_clean_relabelled"],
                               errors="ignore")
            for j, class_id in enumerate(acc.columns):
                row = {"count": int(count), "method": method,
                       "class_id": int(class_id), "class_name": names[class_id],
                       "detector": detector, "n_seeds": len(seeds),
                       "clean_mean": clean[:, j].mean(),
                       "poisoned_mean": pois[:, j].mean(),
                       "repaired_mean": fixed[:, j].mean()}
                for name, delta in (
                        ("poisoned_vs_clean", pois[:, j] - clean[:, j]),
                        ("repaired_vs_clean", fixed[:, j] - clean[:, j]),
                        ("repaired_vs_poisoned", fixed[:, j] - pois[:, j])):
                    mean, (low, high) = stats.t_interval(delta, level=level)
                    row.update({f"{name}": mean, f"{name}_low": low,
                                f"{name}_high": high})
                row.update({k: float(v) for k, v in rem.items()})
                row["level"] = level
                rows.append(row)
    return pd.DataFrame(rows)
