"""`sweep verify`: re-check a results folder's provenance against its manifest.

The data still hashes as recorded, the training subset and the poisoned sets
are what the recorded configuration implies on that data (and what
poisoned.parquet holds), and the result tables hold exactly the grid's
replicas. Nothing in the results folder is changed.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd

from sweep import data as data_lib
from sweep import provenance, results
from sweep import pipeline
from sweep.config import Config
from sweep.errors import SweepError, one_line


def verify(results_dir: str | os.PathLike, data: str | None = None) -> int:
    """Re-check a results folder's provenance against its manifest.

    Prints one line per check ("ok   ..." or "FAIL ...: expected vs found") and
    "note ..." lines that are information only.

    Args:
      results_dir: the sweep's results folder.
      data: the data to check, as for a sweep's --data; None: the data the
        sweep recorded, else $SWEEP_DATA.

    Returns:
      0 when every check passes, 1 when any fails; bad input (no such folder,
      no manifest, data that cannot be loaded) is a SweepError.
    """

    out = Path(results_dir)
    if not out.exists():
        raise SweepError(f"results folder {out} does not exist")
    if not out.is_dir():
        raise SweepError(f"{out} is not a folder")
    manifest = results.read_manifest(out)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
        raise SweepError(f"{out / results.MANIFEST} is not a sweep manifest "
                         "(it has no configuration)")
    if "pairs" in manifest:
        raise SweepError(f"{out} is an attack matrix; verify checks one-pair sweeps "
                         "only so far")
    recorded, ignored = recorded_config(manifest["config"], out)
    spec = data if data is not None else default_data(
        recorded.data, manifest)

    failures: list[str] = []

    def ok(what: str) -> None:
        print(f"ok   {what}", flush=True)

    def fail(what: str, detail: str) -> None:
        failures.append(what)
        print(f"FAIL {what}: {detail}", flush=True)

    def check(what: str, expected, found, show=str) -> bool:
        if expected == found:
            ok(what)
            return True
        fail(what, f"{show(expected)} recorded vs {show(found)} now")
        return False

    # The kernel changes no poisoned set; "auto" keeps prepare from refusing a
    # formulation this version no longer has (and from importing JAX for it).
    config = recorded.replace(data=spec, out=str(out), kernel="auto")
    prepared, prepare_error = None, None
    try:
        prepared = pipeline.prepare(config)  # reads the data; writes nothing to out
    except SweepError as e:
        # Data that loads but on which the configuration cannot be resolved
        # (a class or count that is not there) fails verification; data that
        # does not load at all is bad input.
        dataset = data_lib.load(spec)  # raises the loading error, if that was it
        prepare_error = str(e)
    else:
        dataset = prepared.dataset

    print(f"verifying {out} against data {spec if spec is not None else '(download)'}",
          flush=True)
    if ignored:
        print(f"note the recorded configuration has fields this version ignores: "
              f"{', '.join(ignored)}")
    check("config fingerprint", manifest.get("fingerprint"), recorded.fingerprint())

    recorded_data = manifest.get("data")
    if not isinstance(recorded_data, dict):
        recorded_data = {}
    check("data content hash", manifest.get("data_hash", recorded_data.get("hash")),
          dataset.content_hash, show=short_hash)
    if prepared is None:
        fail("configuration on this data", prepare_error)
    else:
        check("training subset hash", recorded_data.get("train_subset_hash"),
              provenance.array_hash(prepared.train_rows), show=short_hash)
        grid = prepared.grid
        check(
            "grid (classes, counts, seeds)",
            grid_text(*(manifest.get(k) for k in (
                "source_id", "target_id", "resolved_counts", "seeds_list",
                "n_replicas"))),
            grid_text(prepared.source_id, prepared.target_id,
                              list(grid.counts), list(grid.seeds), grid.size),
        )
        check_poisoned(out, prepared, manifest, ok, fail)
        check("poisoned hash", manifest.get("poisoned_hash"),
              provenance.poisoned_hash(prepared.flipped), show=short_hash)

    incomplete = check_tables(out, manifest, recorded, ok, fail)
    print_notes(manifest)

    if failures:
        why = " (the sweep is incomplete)" if incomplete else ""
        print(f"verification failed: {len(failures)} check(s){why}")
        return 1
    print(f"verified: {out}")
    return 0


def recorded_config(d: dict, out):
    """The recorded Config, and the recorded fields this version does not know."""

    names = {f.name for f in dataclasses.fields(Config)}
    kwargs = {k: v for k, v in d.items() if k in names}
    if isinstance(kwargs.get("counts"), list):
        kwargs["counts"] = tuple(kwargs["counts"])
    try:
        config = Config(**kwargs)
    except SweepError as e:
        raise SweepError(
            f"the configuration in {out}/manifest.json is invalid: {e}") from None
    except TypeError as e:
        raise SweepError(
            f"the configuration in {out}/manifest.json is malformed ({e})") from None
    return config, sorted(set(d) - names)


def default_data(recorded: str | None, manifest: dict) -> str | None:
    """The recorded --data if it still resolves, else $SWEEP_DATA, else the
    absolute path the sweep loaded from; None means "as `load(None)` would"."""
    data = manifest.get("data") if isinstance(manifest.get("data"), dict) else {}
    source = data.get("source")
    candidates = [recorded] if recorded is not None else []
    if recorded is None and os.environ.get("SWEEP_DATA"):
        candidates.append(os.environ["SWEEP_DATA"])
    if isinstance(source, str) and os.path.isabs(source):
        candidates.append(source)
    for c in candidates:
        if c == "sample" or Path(c).expanduser().exists():
            return c
    return candidates[0] if candidates else None


def short_hash(h) -> str:
    if not isinstance(h, str):
        return "nothing"
    return h.split(":", 1)[-1][:12]


def grid_text(source_id, target_id, counts, seeds, n) -> str:
    def join(xs):
        return ",".join(map(str, xs)) if isinstance(xs, list) else str(xs)

    return (f"classes {source_id}->{target_id}, counts {join(counts)} x seeds "
            f"{join(seeds)} ({n} replicas)")


def check_poisoned(out, prepared, manifest: dict, ok, fail) -> None:
    """poisoned.parquet, row by row, against the sets the configuration implies."""
    what = "poisoned.parquet"
    cols = ["count", "seed", "index", "old_label", "new_label"]
    expected = results.poisoned_frame(prepared.flipped, prepared.train_labels,
                                      prepared.labels)
    path = out / "poisoned.parquet"
    if not path.is_file():
        fail(what, f"the configuration's {len(expected)} rows vs no file")
        return
    try:
        found = pd.read_parquet(path)
    except Exception as e:  # any unreadable file is a failed check
        fail(what, f"the configuration's {len(expected)} rows vs an unreadable "
             f"file ({one_line(e)})")
        return
    missing = [c for c in cols if c not in found.columns]
    if missing:
        fail(what, f"columns {', '.join(cols)} vs no {', '.join(missing)}")
        return
    a = expected[cols].astype("int64").reset_index(drop=True)
    b = found[cols].astype("int64").reset_index(drop=True)
    if a.shape == b.shape and (a.to_numpy() == b.to_numpy()).all():
        n_sets = sum(1 for idx in prepared.flipped.values() if len(idx))
        ok(f"{what}: the configuration's {n_sets} poisoned set(s), {len(a)} rows")
        return

    def name(key):
        count, seed = key
        return f"count {count}" + ("" if seed == -1 else f" seed {seed}")

    found_sets = {
        (int(c), int(s)): g.reset_index(drop=True)
        for (c, s), g in b.groupby(["count", "seed"], sort=True)
    }
    differ = []
    for key in sorted(set(prepared.flipped) | set(found_sets)):
        e = a[(a["count"] == key[0]) & (a["seed"] == key[1])].reset_index(drop=True)
        f = found_sets.get(key, b.iloc[:0])
        if key not in prepared.flipped:
            differ.append(f"{name(key)} (not in the configuration, {len(f)} rows)")
            continue
        e_idx, f_idx = e["index"].to_numpy(), f["index"].to_numpy()
        if len(e) == len(f) and (e.to_numpy() == f.to_numpy()).all():
            continue
        n_idx = len(set(e_idx.tolist()) ^ set(f_idx.tolist()))
        if n_idx:
            differ.append(f"{name(key)} ({n_idx} index(es) differ: "
                          f"{len(e_idx)} expected, {len(f_idx)} in the file)")
        elif len(e_idx) != len(f_idx) or not np.array_equal(e_idx, f_idx):
            differ.append(f"{name(key)} (same indices, other order or repeats)")
        else:
            differ.append(f"{name(key)} (labels differ)")
    # Whether the file itself changed since the run, or the configuration now
    # implies other sets (different data): the manifest's hash tells them apart.
    file_flipped = {key: g["index"].to_numpy() for key, g in found_sets.items()}
    for key in prepared.flipped:
        if not len(prepared.flipped[key]):
            file_flipped.setdefault(key, np.zeros(0, np.int64))
    if provenance.poisoned_hash(file_flipped) != manifest.get("poisoned_hash"):
        why = "; the file no longer matches the manifest's poisoned_hash"
    else:
        why = "; the file matches the manifest, so the sets now drawn differ"
    fail(what, f"the configuration's sets vs the file's: {'; '.join(differ)}{why}")


def check_tables(out, manifest: dict, config, ok, fail) -> bool:
    """metrics/summary/confusion exist, read, and hold exactly the grid's
    replicas; returns True when the sweep simply has not finished."""
    counts = manifest.get("resolved_counts") or []
    seeds = manifest.get("seeds_list") or []
    n_replicas = manifest.get("n_replicas", len(counts) * len(seeds))
    paths = {k: out / f"{k}.parquet" for k in ("metrics", "summary", "confusion")}
    if manifest.get("status") != "complete" or not paths["metrics"].is_file():
        done = set()
        for path in sorted((out / results.CHUNKS).glob("*.metrics.parquet")):
            try:  # read only: unlike results.done_replicas, never deletes
                ids = pd.read_parquet(path, columns=["replica"])["replica"].unique()
                done.update(int(i) for i in ids)
            except Exception:
                continue
        fail("results", f"incomplete: {len(done)} of {n_replicas} replicas done "
             "(the sweep has not finished; run its command again to continue)")
        return True
    tables, problems = {}, []
    for kind, path in paths.items():
        if not path.is_file():
            problems.append(f"no {path.name}")
            continue
        try:
            tables[kind] = pd.read_parquet(path)
        except Exception as e:
            problems.append(f"{path.name} unreadable ({one_line(e)})")
    if problems:
        fail("result tables", f"metrics, summary and confusion .parquet vs "
             f"{'; '.join(problems)}")
    else:
        ok("result tables: metrics, summary and confusion .parquet read")
    m = tables.get("metrics")
    if m is None:
        return False
    need = ["replica", "count", "seed", "epoch"]
    if any(c not in m.columns for c in need):
        fail("metrics.parquet replicas",
             f"columns {', '.join(need)} vs {', '.join(map(str, m.columns))}")
        return False
    grid = pipeline.Grid(counts=tuple(counts), seeds=tuple(seeds), paired=config.paired)
    problems = []
    want = {(c, s) for c in counts for s in seeds}
    pairs = m[["count", "seed"]].drop_duplicates().to_numpy()
    have = {(int(c), int(s)) for c, s in pairs}
    if have - want:
        problems.append("not in the grid: " + ", ".join(
            f"count {c} seed {s}" for c, s in sorted(have - want)))
    if want - have:
        problems.append("missing: " + ", ".join(
            f"count {c} seed {s}" for c, s in sorted(want - have)))
    ids = m[["replica", "count", "seed"]].drop_duplicates()
    if ids["replica"].nunique() != len(ids):
        problems.append("a replica id has more than one (count, seed)")
    wrong = [int(r) for r, c, s in ids.to_numpy()
             if not 0 <= r < grid.size or grid.replica(int(r)) != (s, c)]
    if wrong:
        problems.append(f"replica id(s) {', '.join(map(str, wrong[:5]))} not where "
                        "the grid puts them")
    epochs = m.groupby("replica")["epoch"].nunique()
    short = epochs[epochs != config.epochs]
    if len(short):
        problems.append(f"{len(short)} replica(s) without all {config.epochs} epochs")
    c = tables.get("confusion")
    if c is not None and "replica" in c.columns and (
            set(c["replica"].unique()) != set(m["replica"].unique())):
        problems.append("confusion.parquet holds other replicas")
    if problems or ids["replica"].nunique() != n_replicas:
        fail("metrics.parquet replicas",
             f"the grid's {n_replicas} (count, seed) pairs vs "
             f"{ids['replica'].nunique()} found" + (f": {'; '.join(problems)}"
                                                     if problems else ""))
    else:
        ok(f"metrics.parquet replicas: exactly the grid's {n_replicas} "
           f"(count, seed) pairs, {config.epochs} epoch(s) each")
    return False


def print_notes(manifest: dict) -> None:
    """Recorded package versions and commit against the current ones (info only)."""
    versions = manifest.get("versions")
    changed = []
    if isinstance(versions, dict):
        for package, then in versions.items():
            if package == "python":
                now = platform.python_version()
            else:
                try:
                    now = importlib.metadata.version(package)
                except importlib.metadata.PackageNotFoundError:
                    now = "not installed"
            if str(then) != now:
                changed.append(f"note {package} {then} then, {now} now")
    for line in changed:
        print(line)
    if isinstance(versions, dict) and not changed:
        print("note package versions as recorded")
    then, now = manifest.get("commit"), provenance.git_commit()
    if then and now and then != now:
        print(f"note commit {then[:10]} then, {now[:10]} now")

