"""The certify run's tables, from the per-image certificates and the sweep's metrics.

Pure functions over tidy tables (no engine, no files):
- `certified_curves`: certified accuracy against radius, overall (class -1)
  and per class, per k and aggregation, from the clean ensembles (count 0);
- `attack_table`: per flip count and class, the undefended model's accuracy
  (the sweep), the ensemble's accuracy under the same flips, and the certified
  accuracy at radius = the number of flipped images, a bound for any attack
  of that size;
- `price_table`: the clean ensemble against one model trained on all the data;
- `violations`: predictions certified at r that r flips changed (must be none).

Accuracies are percent. Every mean over seeds comes with a t interval at
`level` (seeds are partition hashes for the ensembles, training seeds for the
sweep); with one seed the interval is NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sweep import stats

ALL = -1  # class_id of the rows over every test image


def _interval(values, level: float, bounds=(0.0, 100.0)) -> dict:
    """Mean and t interval, clipped to the values' range (an accuracy's true
    mean lies in [0, 100], a change's in [-100, 100], so clipping never
    drops it: the coverage is the t interval's)."""
    mean, (low, high) = stats.t_interval(np.asarray(values, float), level=level)
    low, high = (float(np.clip(x, *bounds)) if np.isfinite(x) else x
                 for x in (low, high))
    return {"mean": mean, "ci_low": low, "ci_high": high, "n_seeds": len(values)}


def _prefixed(prefix: str, values, level: float) -> dict:
    bounds = (-100.0, 100.0) if prefix.endswith("delta") else (0.0, 100.0)
    d = _interval(values, level, bounds)
    return {f"{prefix}_mean": d["mean"], f"{prefix}_low": d["ci_low"],
            f"{prefix}_high": d["ci_high"]}


def _classes(certs: pd.DataFrame) -> list[int]:
    return [ALL, *sorted(int(c) for c in certs["label"].unique())]


def _of_class(frame: pd.DataFrame, class_id: int) -> pd.DataFrame:
    return frame if class_id == ALL else frame[frame["label"] == class_id]


GROUP = ["k", "d", "method"]


def certified_curves(certs: pd.DataFrame, *, level: float, class_names
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Certified accuracy at every radius from the clean ensembles.

    Returns:
      (curves, per_seed): curves has one row per k x d x method x class x
      radius (0 to the largest radius certified anywhere, + 1) with the mean
      over seeds and its interval; per_seed the same per seed. Certified
      accuracy at r is the share of the class's test images that the ensemble
      classifies correctly with radius >= r (at r = 0, its clean accuracy).
    """
    clean = certs[certs["count"] == 0]
    top = int(clean["radius"].max()) + 1 if len(clean) else 0
    radii = np.arange(top + 1)
    seed_rows, rows = [], []
    for (k, d, method), g in clean.groupby(GROUP, sort=True):
        for class_id in _classes(clean):
            per_seed = {}
            for seed, s in _of_class(g, class_id).groupby("seed"):
                ok = s["correct"].to_numpy()
                r = s["radius"].to_numpy()
                acc = 100.0 * ((ok[None, :] & (r[None, :] >= radii[:, None]))
                               .mean(1))  # (radii,)
                per_seed[int(seed)] = acc
                for radius, a in zip(radii, acc):
                    seed_rows.append({"k": k, "d": d, "method": method,
                                      "class_id": class_id, "seed": int(seed),
                                      "radius": int(radius),
                                      "certified_accuracy": a})
            name = "all" if class_id == ALL else class_names[class_id]
            stacked = np.stack(list(per_seed.values()))  # (seeds, radii)
            for j, radius in enumerate(radii):
                rows.append({"k": k, "d": d, "method": method, "class_id": class_id,
                             "class_name": name, "radius": int(radius),
                             **_interval(stacked[:, j], level), "level": level})
    return pd.DataFrame(rows), pd.DataFrame(seed_rows)


def _accuracy_by_seed(frame: pd.DataFrame, class_id: int) -> dict[int, float]:
    g = _of_class(frame, class_id)
    return {int(s): 100.0 * float(x["correct"].mean()) for s, x in g.groupby("seed")}


def _certified_by_seed(clean: pd.DataFrame, class_id: int, radius: int
                       ) -> dict[int, float]:
    g = _of_class(clean, class_id)
    return {int(s): 100.0 * float((x["correct"] & (x["radius"] >= radius)).mean())
            for s, x in g.groupby("seed")}


def sweep_accuracy(metrics: pd.DataFrame) -> pd.DataFrame:
    """The sweep's last-epoch test accuracy per count x seed x class (percent),
    with the overall accuracy as class -1; diverged replicas left out."""
    last = metrics[(metrics["epoch"] == metrics["epoch"].max()) & ~metrics["diverged"]]
    per_class = last[["count", "seed", "class_id", "accuracy"]]
    overall = (last.groupby(["count", "seed"])[["correct", "n"]].sum()
               .reset_index())
    overall["accuracy"] = 100.0 * overall["correct"] / overall["n"]
    overall["class_id"] = ALL
    return pd.concat([per_class, overall[["count", "seed", "class_id", "accuracy"]]],
                     ignore_index=True)


def attack_table(certs: pd.DataFrame, sweep_acc: pd.DataFrame | None, *,
                 level: float, class_names) -> pd.DataFrame:
    """Per k x d x method x count x class: the three numbers side by side.

    - undefended: the sweep's model under `count` flips (mean over training
      seeds, t interval) and its paired change from the clean twin;
    - ensemble: the aggregated ensemble under the same flips, only the
      touched partitions retrained (mean over partition seeds) and its paired
      change from the clean ensemble of the same seed;
    - certified: the clean ensemble's certified accuracy at radius =
      n_flipped, which no attack on that many images can push the ensemble
      below (it holds per seed: `bound_holds`).
    `sweep_acc` None (no baseline) leaves the undefended columns NaN.
    """
    rows = []
    clean_all = certs[certs["count"] == 0]
    for (k, d, method), g in certs.groupby(GROUP, sort=True):
        clean = clean_all[(clean_all["k"] == k) & (clean_all["d"] == d)
                          & (clean_all["method"] == method)]
        for count, att in g.groupby("count", sort=True):
            n_flipped = int(att["n_flipped"].iloc[0])
            for class_id in _classes(certs):
                ens = _accuracy_by_seed(att, class_id)
                base = _accuracy_by_seed(clean, class_id)
                cert = _certified_by_seed(clean, class_id, n_flipped)
                seeds = sorted(ens)
                row = {"k": k, "d": d, "method": method, "count": int(count),
                       "n_flipped": n_flipped, "class_id": class_id,
                       "class_name": "all" if class_id == ALL
                       else class_names[class_id]}
                row.update(_prefixed("ensemble", [ens[s] for s in seeds], level))
                row.update(_prefixed("ensemble_delta",
                                     [ens[s] - base[s] for s in seeds], level))
                row.update(_prefixed("certified", [cert[s] for s in seeds], level))
                row["bound_holds"] = all(ens[s] >= cert[s] for s in seeds)
                row.update(_undefended(sweep_acc, int(count), class_id, level))
                row["n_seeds"] = len(seeds)
                row["level"] = level
                rows.append(row)
    return pd.DataFrame(rows)


def _undefended(sweep_acc: pd.DataFrame | None, count: int, class_id: int,
                level: float) -> dict:
    if sweep_acc is None:
        return {f"undefended{s}": np.nan for s in
                ("_mean", "_low", "_high", "_delta_mean", "_delta_low",
                 "_delta_high")} | {"undefended_seeds": 0}
    a = sweep_acc[sweep_acc["class_id"] == class_id].set_index(["count", "seed"])
    att = a.loc[count]["accuracy"] if count in a.index.get_level_values(0) else None
    if att is None:
        return _undefended(None, count, class_id, level)
    clean = a.loc[0]["accuracy"]
    paired = [s for s in att.index if s in clean.index]
    out = _prefixed("undefended", att.to_numpy(), level)
    out.update(_prefixed("undefended_delta",
                         [att[s] - clean[s] for s in paired], level))
    out["undefended_seeds"] = len(att)
    return out


def price_table(certs: pd.DataFrame, base_acc: pd.DataFrame,
                sweep_acc: pd.DataFrame | None, *, level: float, class_names
                ) -> pd.DataFrame:
    """Per k x d x method x class: the clean ensemble, its base models and one
    model trained on all the data (the sweep's clean replicas).

    `base_acc`: one row per base model of a clean ensemble (k, d, seed,
    class_id, accuracy). The single model's and the ensemble's seeds are
    independent (different keys), so their difference takes Welch's interval.
    """
    rows = []
    clean = certs[certs["count"] == 0]
    for (k, d, method), g in clean.groupby(GROUP, sort=True):
        for class_id in _classes(certs):
            ens = _accuracy_by_seed(g, class_id)
            b = base_acc[(base_acc["k"] == k) & (base_acc["d"] == d)
                         & (base_acc["class_id"] == class_id)]
            base = b.groupby("seed")["accuracy"].mean()
            row = {"k": k, "d": d, "method": method, "class_id": class_id,
                   "class_name": "all" if class_id == ALL else class_names[class_id]}
            row.update(_prefixed("ensemble", list(ens.values()), level))
            row.update(_prefixed("base_model", base.to_numpy(), level))
            single = np.array([])
            if sweep_acc is not None:
                s = sweep_acc[(sweep_acc["count"] == 0)
                              & (sweep_acc["class_id"] == class_id)]
                single = s["accuracy"].to_numpy()
            row.update(_prefixed("single", single, level))
            diff, (low, high) = (stats.welch_interval(single, list(ens.values()),
                                                      level=level)
                                 if len(single) >= 2 and len(ens) >= 2
                                 else (np.nan, (np.nan, np.nan)))
            low, high = max(low, -100.0), min(high, 100.0)
            row.update({"price_mean": diff, "price_low": low, "price_high": high,
                        "n_seeds": len(ens), "single_seeds": len(single),
                        "level": level})
            rows.append(row)
    return pd.DataFrame(rows)


def violations(certs: pd.DataFrame) -> pd.DataFrame:
    """Test images whose clean prediction was certified at radius >= n_flipped
    but changed under that attack: the certificate's promise, checked on the
    attacks this run made. Empty unless something is wrong."""
    key = ["k", "d", "method", "seed", "test_index"]
    clean = certs.loc[certs["count"] == 0, [*key, "prediction", "radius"]]
    att = certs[certs["count"] > 0].merge(clean, on=key, suffixes=("", "_clean"))
    bad = (att["radius_clean"] >= att["n_flipped"]) & (
        att["prediction"] != att["prediction_clean"])
    return att[bad]
