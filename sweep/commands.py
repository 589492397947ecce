"""The subcommands besides `run`: report, plan, verify.

Each takes its argv and the one-line-error parser class from `__main__`, and
returns the exit status. Errors are `SweepError`s, printed by `__main__.main`.
"""

from __future__ import annotations

import argparse


def cmd_report(argv: list[str], parser_class: type[argparse.ArgumentParser]) -> int:
    from sweep import report

    p = parser_class(
        prog="python -m sweep report",
        description=(
            "Recompute every statistic of a finished sweep and write report.md, "
            "report.html, the PNG figures and an updated summary.parquet into "
            "its results folder."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("results_dir", help="a sweep's results folder")
    p.add_argument("--level", type=float, default=0.95,
                   help="confidence level of every interval")
    p.add_argument("--threshold", type=float, default=None, help=(
        "answer: how many flips push source-class accuracy below this percent "
        "(default: 10 points below its clean accuracy)"))
    args = p.parse_args(argv)
    facts = []
    path = report.write_report(args.results_dir, level=args.level,
                               threshold=args.threshold, on_facts=facts.append)
    print_headlines(facts[0])
    print(f"report: {path} (and report.md, *.png, summary.parquet beside it)")
    return 0


def print_headlines(facts) -> None:
    """The answers a reader wants first, as the report states them."""
    f = facts
    if f.seeds_note:
        print(f"note: {f.seeds_note}")
    print(f.threshold_text)
    holm, bh = f.significant.get(f.source, (None, None))
    if holm is None and bh is None:
        print(f"{f.source}: no count's effect is significant after correction "
              f"(smallest attainable p with these seeds: {f.min_p:.3g})")
    else:
        print(f"{f.source}: smallest significant count {holm} (Holm), {bh} (BH)")
    if f.twin_corr == f.twin_corr:  # not NaN
        print(f"paired design: twin correlation {f.twin_corr:.2f}, intervals "
              f"{f.width_ratio:.2f}x the width of unpaired (Welch) ones")


def cmd_plan(argv: list[str], parser_class: type[argparse.ArgumentParser]) -> int:
    from sweep import stats

    p = parser_class(
        prog="python -m sweep plan",
        description=(
            "How many seeds a sweep needs to detect an effect of a given size "
            "(paired t test), and the power of each seed count. The sd of the "
            "paired deltas comes from --sd, a finished sweep (--from), or a default."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--effect", type=float, required=True,
                   help="accuracy change to detect, percentage points")
    p.add_argument("--sd", type=float, default=None,
                   help="sd of paired deltas, points (default: from --from, "
                   f"else {stats.DEFAULT_SD})")
    p.add_argument("--from", dest="results_dir", default=None, metavar="RESULTS_DIR",
                   help="take the sd from this finished sweep")
    p.add_argument("--alpha", type=float, default=stats.POWER_ALPHA,
                   help="two-sided significance level")
    p.add_argument("--power", type=float, default=stats.POWER_TARGET,
                   help="wanted power")
    args = p.parse_args(argv)
    table = stats.plan(args.effect, args.sd, args.alpha, args.power,
                       results_dir=args.results_dir)
    print(stats.format_plan(table))
    return 0


def cmd_verify(argv: list[str], parser_class: type[argparse.ArgumentParser]) -> int:
    """Re-check a results folder's provenance against its manifest.

    Prints one line per check ("ok   ..." or "FAIL ...: expected vs found") and
    "note ..." lines that are information only. Returns 0 when every check
    passes, 1 when any fails; bad input (no such folder, no manifest, data that
    cannot be loaded) is a SweepError.
    """
    from pathlib import Path

    from sweep import provenance, results
    from sweep import run as run_lib
    from sweep.errors import SweepError

    p = parser_class(
        prog="python -m sweep verify",
        description=(
            "Re-check a sweep's provenance: the data still hashes as recorded in "
            "manifest.json, the training subset and the poisoned sets are what "
            "the recorded configuration implies on that data (and what "
            "poisoned.parquet holds), and the result tables are complete. "
            "Nothing in the results folder is changed. Exit status 0: verified; "
            "1: a check failed; 2: bad input."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("results_dir", help="a sweep's results folder")
    p.add_argument("--data", default=None, metavar="PATH", help=(
        "the data to check, as for a sweep's --data ('sample' or a path); "
        "default: the data the sweep recorded, else $SWEEP_DATA"))
    args = p.parse_args(argv)

    out = Path(args.results_dir)
    if not out.exists():
        raise SweepError(f"results folder {out} does not exist")
    if not out.is_dir():
        raise SweepError(f"{out} is not a folder")
    manifest = results.read_manifest(out)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
        raise SweepError(f"{out / results.MANIFEST} is not a sweep manifest "
                         "(it has no configuration)")
    recorded, ignored = _verify_config(manifest["config"], out)
    spec = args.data if args.data is not None else _verify_default_data(
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
        prepared = run_lib.prepare(config)  # reads the data; writes nothing to out
    except SweepError as e:
        # Data that loads but on which the configuration cannot be resolved
        # (a class or count that is not there) fails verification; data that
        # does not load at all is bad input.
        from sweep import data as data_lib

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
          dataset.content_hash, show=_verify_short)
    if prepared is None:
        fail("configuration on this data", prepare_error)
    else:
        check("training subset hash", recorded_data.get("train_subset_hash"),
              provenance.array_hash(prepared.train_rows), show=_verify_short)
        grid = prepared.grid
        check(
            "grid (classes, counts, seeds)",
            _verify_grid_text(*(manifest.get(k) for k in (
                "source_id", "target_id", "resolved_counts", "seeds_list",
                "n_replicas"))),
            _verify_grid_text(prepared.source_id, prepared.target_id,
                              list(grid.counts), list(grid.seeds), grid.size),
        )
        _verify_poisoned(out, prepared, manifest, ok, fail)
        check("poisoned hash", manifest.get("poisoned_hash"),
              provenance.poisoned_hash(prepared.flipped), show=_verify_short)

    incomplete = _verify_tables(out, manifest, recorded, ok, fail)
    _verify_notes(manifest)

    if failures:
        why = " (the sweep is incomplete)" if incomplete else ""
        print(f"verification failed: {len(failures)} check(s){why}")
        return 1
    print(f"verified: {out}")
    return 0


def _verify_config(d: dict, out):
    """The recorded Config, and the recorded fields this version does not know."""
    import dataclasses

    from sweep.config import Config
    from sweep.errors import SweepError

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


def _verify_default_data(recorded: str | None, manifest: dict) -> str | None:
    """The recorded --data if it still resolves, else $SWEEP_DATA, else the
    absolute path the sweep loaded from; None means "as `load(None)` would"."""
    import os
    from pathlib import Path

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


def _verify_short(h) -> str:
    if not isinstance(h, str):
        return "nothing"
    return h.split(":", 1)[-1][:12]


def _verify_grid_text(source_id, target_id, counts, seeds, n) -> str:
    def join(xs):
        return ",".join(map(str, xs)) if isinstance(xs, list) else str(xs)

    return (f"classes {source_id}->{target_id}, counts {join(counts)} x seeds "
            f"{join(seeds)} ({n} replicas)")


def _verify_poisoned(out, prepared, manifest: dict, ok, fail) -> None:
    """poisoned.parquet, row by row, against the sets the configuration implies."""
    import numpy as np
    import pandas as pd

    from sweep import provenance, results

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
             f"file ({_verify_one_line(e)})")
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


def _verify_tables(out, manifest: dict, config, ok, fail) -> bool:
    """metrics/summary/confusion exist, read, and hold exactly the grid's
    replicas; returns True when the sweep simply has not finished."""
    import pandas as pd

    from sweep import results
    from sweep.run import Grid

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
            problems.append(f"{path.name} unreadable ({_verify_one_line(e)})")
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
    grid = Grid(counts=tuple(counts), seeds=tuple(seeds), paired=config.paired)
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


def _verify_notes(manifest: dict) -> None:
    """Recorded package versions and commit against the current ones (info only)."""
    import importlib.metadata
    import platform

    from sweep import provenance

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


def _verify_one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__
