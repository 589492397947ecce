"""The Python API, for notebooks: `sweep.run(...)` and `sweep.load(path)`.

    import sweep
    res = sweep.run(data="sample", counts=[100, 300], seeds=4, epochs=3)
    res.summary                 # DataFrame: count x class deltas with intervals
    res.plot_dose_response()    # a matplotlib Figure; a notebook shows it inline
    res.report()                # writes report.html beside the results; its path
    res = sweep.load("results/cat-dog-flip-s4-...")   # a finished folder
    cert = sweep.certify(data="sample", partitions=[50], counts=[5, 50], seeds=3)
    cert.certified, cert.attack, cert.report()          # a certified defence

Keyword arguments are the command line's options with underscores (`--train-size`
is `train_size`, `--unpaired` is `unpaired=True`, `--dtype` is `dtype`, `--attack`
is `attack`); lists may replace comma-separated values (`counts=[1, 5, "10%"]`).
A backdoor left without counts or source takes the command line's defaults
(0.1%-10% of the training set, all-to-one): `sweep.run(attack="badnets",
target="airplane", data="sample", seeds=4)`. The command line is a thin layer
over the same `run_config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from sweep.defences.certify import certify_report
from sweep.defences.certify.certify_run import CertifyConfig, run_certify
from sweep.errors import SweepError
from sweep.experiment.config import BACKDOORS, Config, backdoor
from sweep.experiment.running import run_sweep
from sweep.experiment.running.progress import Progress
from sweep.report import write
from sweep.results.load import load_results

# Command-line spellings that are not Config field names.
ALIASES = {"dtype": "compute_dtype", "attack": "strategy"}


def config_of(**options) -> Config:
    """A Config from command-line-style keyword arguments, refusing unknown ones."""
    fields = {f.name for f in dataclasses.fields(Config)}
    kwargs = {}
    for name, value in options.items():
        if name == "unpaired":
            kwargs["paired"] = not value
            continue
        field = ALIASES.get(name, name)
        if field not in fields:
            known = sorted(fields | set(ALIASES) | {"unpaired"})
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SweepError(f"unknown option {name!r}{hint}")
        kwargs[field] = value
    if kwargs.get("strategy") in BACKDOORS:  # BackdoorBench's counts, all-to-one
        preset = backdoor(kwargs["strategy"])
        kwargs.setdefault("counts", preset.counts)
        kwargs.setdefault("source", preset.source)
    if "counts" in kwargs:
        kwargs["counts"] = _counts(kwargs["counts"])
    if kwargs.get("pairs") is not None:  # "cat:dog,dog:cat" or a list of them
        kwargs["pairs"] = _counts(kwargs["pairs"])
    for name in ("data", "out"):
        if isinstance(kwargs.get(name), os.PathLike):
            kwargs[name] = os.fspath(kwargs[name])
    return Config(**kwargs)


def _counts(counts) -> tuple[str, ...]:
    if isinstance(counts, str):
        return tuple(s.strip() for s in counts.split(",") if s.strip()) or ("",)
    if isinstance(counts, (int, float)):
        counts = [counts]
    return tuple(str(c).strip() for c in counts)


def run(*, resume: bool = False, progress: bool = True, **options) -> Results:
    """Run (or continue) a sweep and return its results.

    Args:
      resume: require an existing results folder to continue (as `--resume`).
      progress: show the progress line on stderr.
      **options: the command line's options, e.g. `data="sample"`,
        `counts=[100, 300]`, `seeds=4`, `epochs=3`, `train_size=2000`, `out=...`,
        `report=True`, `optimizer="clip_by_global_norm(1.0), adam"`.
    """
    return run_config(config_of(**options), resume=resume, progress=progress)


def run_config(config: Config, *, resume: bool = False, progress: bool = True,
               log: Callable[[str], None] | None = None,
               on_facts: Callable | None = None) -> Results:
    """`run` for a ready Config (what the command line calls)."""
    out = run_sweep.run(
        config, resume=resume, progress=Progress() if progress else None,
        on_facts=on_facts, log=log or (lambda s: print(s, file=sys.stderr)),
    )
    return Results(out)


def load(path: str | os.PathLike) -> Results:
    """The results of a finished sweep's folder (refuses a missing or partial one)."""
    return Results(load_results(path).path)


class Results:
    """A finished sweep's results folder, read lazily.

    Attributes:
      path: the folder.
      manifest: manifest.json as a dict (configuration, data hash, versions...).
      metrics, summary, confusion, poisoned: the parquet tables (DataFrames).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._tables: dict = {}

    def __repr__(self) -> str:
        m = self.manifest
        names = m.get("class_names", [])
        src = m.get("source_id")
        src = "?" if src is None else "all" if src < 0 else names[src]  # -1: backdoor
        tgt = names[m["target_id"]] if "target_id" in m else "?"
        return (f"<sweep Results {src}->{tgt}, counts {m.get('resolved_counts')}, "
                f"{len(m.get('seeds_list', []))} seeds: {self.path}>")

    @property
    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text())

    def _table(self, name: str) -> pd.DataFrame:
        if name not in self._tables:
            path = self.path / f"{name}.parquet"
            if not path.exists():
                raise SweepError(f"{self.path} has no {name}.parquet")
            self._tables[name] = pd.read_parquet(path)
        return self._tables[name]

    @property
    def metrics(self) -> pd.DataFrame:
        return self._table("metrics")

    @property
    def summary(self) -> pd.DataFrame:
        return self._table("summary")

    @property
    def confusion(self) -> pd.DataFrame:
        return self._table("confusion")

    @property
    def poisoned(self) -> pd.DataFrame:
        return self._table("poisoned")

    def report(self, *, level: float = 0.95, threshold: float | None = None) -> Path:
        """Write report.html, report.md and the PNGs beside the results; the html path.

        Also rewrites summary.parquet at `level`, as `python -m sweep report` does.
        """
        path = write.write_report(self.path, level=level, threshold=threshold)
        self._tables.pop("summary", None)
        return path

    def figures(self, *, level: float = 0.95, threshold: float | None = None) -> dict:
        """The report's figures as matplotlib Figures, by name ("dose_response", ...).

        The same numbers as the report at the same level and threshold; nothing
        is written.
        """
        analysis = write.analyse(self.path, level=level, threshold=threshold)
        drawn, _ = write.plan_figures(analysis, level=level)
        return {name.removesuffix(".png"): draw() for name, _, draw in drawn}

    def plot_dose_response(self, *, level: float = 0.95,
                           threshold: float | None = None):
        """Accuracy change vs flipped labels per class (the report's first figure)."""
        analysis = write.analyse(self.path, level=level, threshold=threshold)
        drawn, _ = write.plan_figures(analysis, level=level, only="dose_response.png")
        return drawn[0][2]()


# sweep.certify's own options (the rest are a sweep's); --aggregation's name.
CERTIFY_OPTIONS = {"partitions": "partitions", "aggregation": "aggregations",
                   "aggregations": "aggregations", "fa_copies": "fa_copies",
                   "base_epochs": "base_epochs", "baseline": "baseline",
                   "level": "level"}
CERTIFY_SEEDS = 3  # the command line's default: partition seeds


def certify(*, log: Callable[[str], None] | None = None, **options
            ) -> CertifyResults:
    """Run (or continue) a certified defence and return its results.

    Partition aggregation (`python -m sweep certify`): for every seed, k base
    models on hash partitions of the training set, trained together as
    replicas; every test image's prediction and certified radius; under each
    flip count, the touched partitions retrained, beside the undefended sweep.

    Args:
      log: where one-line status messages go (default: stderr).
      **options: a sweep's options (`data=`, `train_size=`, `counts=`,
        `seeds=` (default 3), `epochs=`, `out=`, ...) and the defence's:
        `partitions=[50, 250]`, `aggregation="dpa,dpa-roe"` (or a list; also
        "fa", "fa-roe"), `fa_copies=8`, `base_epochs=`, `baseline=True`,
        `level=0.95`.
    """
    own = {CERTIFY_OPTIONS[k]: options.pop(k) for k in list(options)
           if k in CERTIFY_OPTIONS}
    options.setdefault("seeds", CERTIFY_SEEDS)
    for name in ("partitions", "aggregations"):
        if name in own:
            own[name] = _counts(own[name])
    if "partitions" in own:
        try:
            own["partitions"] = tuple(int(k) for k in own["partitions"])
        except ValueError:
            raise SweepError(f"partitions takes whole numbers, got "
                             f"{','.join(own['partitions'])}") from None
    config = CertifyConfig(sweep=config_of(**options), **own)
    out = run_certify(config, log=log or (lambda s: print(s, file=sys.stderr)))
    return CertifyResults(out)


class CertifyResults:
    """A certify run's folder, read lazily.

    Attributes:
      path: the folder; meta: certify.json as a dict.
      certificates, certified, certified_seeds, attack, price, models,
      ensembles: the parquet tables (DataFrames).
      sweep: the undefended sweep's `Results` (None without the baseline).
    """

    TABLES = ("certificates", "certified", "certified_seeds", "attack", "price",
              "models", "ensembles")

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not (self.path / "certify.json").exists():
            raise SweepError(f"{self.path} is not a certify run (no certify.json)")
        self._tables: dict = {}

    def __repr__(self) -> str:
        cfg = self.meta["config"]
        return (f"<sweep CertifyResults k={cfg['partitions']}, counts "
                f"{self.meta.get('resolved_counts')}: {self.path}>")

    def __getattr__(self, name: str):
        if name not in CertifyResults.TABLES:
            raise AttributeError(name)
        if name not in self._tables:
            path = self.path / f"{name}.parquet"
            if not path.exists():
                raise SweepError(f"{self.path} has no {name}.parquet; rerun the "
                                 "certify command to finish it")
            self._tables[name] = pd.read_parquet(path)
        return self._tables[name]

    @property
    def meta(self) -> dict:
        return json.loads((self.path / "certify.json").read_text())

    @property
    def sweep(self) -> Results | None:
        sub = self.path / "sweep"
        return Results(sub) if (sub / "metrics.parquet").exists() else None

    def report(self) -> Path:
        """Write certify.html, certify.md and the PNGs; the html path."""
        return certify_report.write_certify_report(self.path)

    def figures(self) -> dict:
        """The report's figures as matplotlib Figures: "certified", "attack"."""
        meta = self.meta
        src = meta["source_id"]
        name = meta["class_names"][src]
        return {"certified": certify_report.figure_certified(
                    self.certified, source=src, source_name=name),
                "attack": certify_report.figure_attack(
                    self.attack, class_id=src, class_name=name)}
