"""`sweep verify`: re-check a results folder's provenance against its manifest.

The data still hashes as recorded, the training subset and the poisoned sets
are what the recorded configuration implies on that data (and what
poisoned.parquet holds), and the result tables hold exactly the grid's
replicas. A backdoor sweep's trigger is rebuilt and hashed, every replica's
stamp mask (and a clean-label sweep's perturbed rows, `perturbed.npz`) rebuilt
and checked against the file's sets. Nothing in the results folder is changed.
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
from sweep import results
from sweep.data.hashing import index_hash
from sweep.errors import SweepError, one_line
from sweep.experiment import prepare as prepare_lib
from sweep.experiment.attacks.backdoors import trigger_hash
from sweep.experiment.config import Config
from sweep.experiment.running import perturbation
from sweep.experiment.running.manifest import poisoned_hash
from sweep.results.environment import git_commit
from sweep.results.tables import CLEAN


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
        prepared = prepare_lib.prepare(config)  # reads the data; writes nothing to out
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
              index_hash(prepared.train_rows), show=short_hash)
        grid = prepared.grid
        pairs = ([list(pair) for pair in prepared.pairs] if prepared.is_matrix
                 else [[prepared.source_id, prepared.target_id]])
        check(
            "grid (classes, counts, seeds)",
            grid_text(manifest.get("pairs") or [[manifest.get("source_id"),
                                                 manifest.get("target_id")]],
                      *(manifest.get(k) for k in (
                          "resolved_counts", "seeds_list", "n_replicas"))),
            grid_text(pairs, list(grid.counts), list(grid.seeds), grid.size),
        )
        check_poisoned(out, prepared, manifest, ok, fail)
        flipped = prepared.pair_flipped if prepared.is_matrix else prepared.flipped
        check("poisoned hash", manifest.get("poisoned_hash"),
              poisoned_hash(flipped), show=short_hash)
        if prepared.backdoor is not None:
            check_backdoor(out, prepared, manifest, ok, fail, check)

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


def grid_text(pairs, counts, seeds, n) -> str:
    """pairs: [[source, target], ...] class ids (one for a plain sweep)."""
    def join(xs):
        return ",".join(map(str, xs)) if isinstance(xs, list) else str(xs)

    classes = ", ".join(f"{s}->{t}" for s, t in pairs) if isinstance(
        pairs, list) else str(pairs)
    return (f"classes {classes}, counts {join(counts)} x seeds "
            f"{join(seeds)} ({n} replicas)")


def check_poisoned(out, prepared, manifest: dict, ok, fail) -> None:
    """poisoned.parquet, row by row, against the sets the configuration implies."""
    what = "poisoned.parquet"
    by = (["source", "target"] if prepared.is_matrix else []) + ["count", "seed"]
    cols = [*by, "index", "old_label", "new_label"]
    expected = prepare_lib.poisoned_table(prepared)
    flipped = prepared.pair_flipped if prepared.is_matrix else prepared.flipped
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
        n_sets = sum(1 for idx in flipped.values() if len(idx))
        ok(f"{what}: the configuration's {n_sets} poisoned set(s), {len(a)} rows")
        return

    names = prepared.dataset.class_names

    def name(key):
        *pair, count, seed = key
        where = f"{names[pair[0]]}->{names[pair[1]]} " if pair else ""
        return f"{where}count {count}" + ("" if seed == -1 else f" seed {seed}")

    found_sets = {
        tuple(int(v) for v in key): g.reset_index(drop=True)
        for key, g in b.groupby(by, sort=True)
    }
    expected_sets = {
        tuple(int(v) for v in key): g.reset_index(drop=True)
        for key, g in a.groupby(by, sort=True)
    }
    differ = []
    for key in sorted(set(flipped) | set(found_sets)):
        e = expected_sets.get(key, a.iloc[:0])
        f = found_sets.get(key, b.iloc[:0])
        if key not in flipped:
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
    for key in flipped:
        if not len(flipped[key]):
            file_flipped.setdefault(key, np.zeros(0, np.int64))
    if poisoned_hash(file_flipped) != manifest.get("poisoned_hash"):
        why = "; the file no longer matches the manifest's poisoned_hash"
    else:
        why = "; the file matches the manifest, so the sets now drawn differ"
    fail(what, f"the configuration's sets vs the file's: {'; '.join(differ)}{why}")


def check_backdoor(out, prepared, manifest: dict, ok, fail, check) -> None:
    """The trigger, a clean-label sweep's perturbed copies, and every replica's
    stamps (mask, rows) rebuilt against poisoned.parquet's sets."""
    bd = prepared.backdoor
    attack = manifest.get("attack") if isinstance(manifest.get("attack"), dict) else {}
    check("trigger hash", attack.get("trigger_hash"), trigger_hash(bd.trigger),
          show=short_hash)
    n = len(prepared.train_labels)
    stored = prepared.train_images
    if bd.perturbs:
        recorded = attack.get("perturbation") or {}
        path = out / perturbation.PERTURBED
        found = perturbation.read(path) if path.is_file() else None
        index = prepared.perturbation_index()
        if found is None:
            fail(perturbation.PERTURBED, f"{len(index)} perturbed images vs no "
                 "readable file")
            return
        got = perturbation.perturbed_hash(found.index, found.images)
        moved = np.abs(found.images.astype(np.int16)
                       - stored[found.index].astype(np.int16)) if len(
            found.index) and found.index.max() < n else None
        problems = []
        if not np.array_equal(found.index, index):
            problems.append("not the configuration's poisoned images")
        if got != recorded.get("perturbed_hash"):
            problems.append(f"hash {short_hash(got)} vs "
                            f"{short_hash(recorded.get('perturbed_hash'))} recorded")
        if moved is not None and moved.max() > bd.perturbation_eps:
            problems.append(f"moves a pixel {moved.max()} levels, past eps "
                            f"{bd.perturbation_eps}")
        if problems:
            fail(perturbation.PERTURBED, "; ".join(problems))
            return
        ok(f"{perturbation.PERTURBED}: {len(index)} perturbed images, within "
           f"{bd.perturbation_eps}/255 of the originals")
        prepared = dataclasses.replace(prepared, perturbed=found)
        stored = prepared.stored_images()
    sets = {}
    path = out / "poisoned.parquet"
    try:
        table = pd.read_parquet(path, columns=["count", "seed", "index"])
        sets = {(int(c), int(s)): g["index"].to_numpy()
                for (c, s), g in table.groupby(["count", "seed"])}
    except Exception:  # check_poisoned has said what is wrong with the file
        fail("stamps", "poisoned.parquet cannot be read to check them against")
        return
    wrong = []
    for replica in range(prepared.grid.size):
        stamps = prepared.stamps([replica])
        seed, count = prepared.grid.replica(replica)
        mask = np.zeros(n, bool)
        mask[sets.get(prepared.poison_key(seed, count), np.zeros(0, np.int64))] = True
        good = np.array_equal(stamps.mask[0], mask)
        if good and stamps.rows is not None:
            # The replica reads the originals where it is not stamped, and the
            # file's perturbed copies where it is.
            rows, stamped = stamps.rows[0], np.flatnonzero(mask)
            copies = found.images[np.searchsorted(found.index, stamped)]
            good = (np.array_equal(rows[~mask], np.flatnonzero(~mask))
                    and np.array_equal(stored[rows[mask]], copies))
        if not good:
            wrong.append(replica)
    if wrong:
        fail("stamps", f"replica(s) {', '.join(map(str, wrong[:5]))} stamp other "
             "images than poisoned.parquet lists")
    else:
        ok(f"stamps: every replica's mask is its poisoned.parquet set "
           f"({prepared.grid.size} replicas)")


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
    need = ["replica", "epoch"]
    if any(c not in m.columns for c in need):
        fail("metrics.parquet replicas",
             f"columns {', '.join(need)} vs {', '.join(map(str, m.columns))}")
        return False
    pairs = [tuple(pair) for pair in manifest.get("pairs") or []]
    by = ["count", "seed"] + (["source", "target"] if pairs else [])
    if any(c not in m.columns for c in by):
        fail("metrics.parquet replicas",
             f"columns {', '.join(by)} vs {', '.join(map(str, m.columns))}")
        return False
    grid = prepare_lib.Grid(counts=tuple(counts), seeds=tuple(seeds),
                            paired=config.paired, n_pairs=max(1, len(pairs)))
    names = manifest.get("class_names") or []

    def cell(r: int) -> tuple[int, ...]:
        """(count, seed[, source, target]) the grid puts at replica r."""
        seed, pair, count = grid.cell(r)
        if not pairs:
            return count, seed
        return (count, seed, *((CLEAN, CLEAN) if pair < 0 else pairs[pair]))

    def text(c: tuple[int, ...]) -> str:
        count, seed, *pair = c
        where = ""
        if pair and pair[0] == CLEAN:
            where = "clean "
        elif pair:
            where = "->".join(names[i] if 0 <= i < len(names) else str(i)
                              for i in pair) + " "
        return f"{where}count {count} seed {seed}"

    problems = []
    want = {cell(r) for r in range(grid.size)}
    have = {tuple(int(v) for v in row)
            for row in m[by].drop_duplicates().to_numpy()}
    if have - want:
        problems.append("not in the grid: " + ", ".join(map(text, sorted(have - want))))
    if want - have:
        problems.append("missing: " + ", ".join(map(text, sorted(want - have))))
    ids = m[["replica", *by]].drop_duplicates()
    if ids["replica"].nunique() != len(ids):
        problems.append("a replica id has more than one grid cell")
    wrong = [int(r) for r, *rest in ids.to_numpy()
             if not 0 <= r < grid.size or cell(int(r)) != tuple(int(v) for v in rest)]
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
             f"the grid's {n_replicas} replicas vs "
             f"{ids['replica'].nunique()} found" + (f": {'; '.join(problems)}"
                                                     if problems else ""))
    else:
        ok(f"metrics.parquet replicas: exactly the grid's {n_replicas} "
           f"({'pair, ' if pairs else ''}count, seed) cells, "
           f"{config.epochs} epoch(s) each")
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
    then, now = manifest.get("commit"), git_commit()
    if then and now and then != now:
        print(f"note commit {then[:10]} then, {now[:10]} now")

