"""Run (or continue) a sweep: train what is left, join the tables, report.

Under the results folder's lock: the manifest first (refusing a folder made by
another sweep), then the replicas not yet on disk, chunk by chunk (on this host
or as Ray tasks), then the tidy tables, the summary, and the report and MLflow
run when asked.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from sweep import results
from sweep.errors import SweepError
from sweep.experiment.config import Config
from sweep.experiment.prepare import Prepared, poisoned_table, prepare
from sweep.experiment.running import perturbation, train_local, train_ray
from sweep.experiment.running.manifest import build_manifest, check_resumable
from sweep.report import mlflow_runs
from sweep.report.write import write_report
from sweep.results import lock
from sweep.stats import asr_by_count, classes_of, threshold_table
from sweep.stats.pair_tables import summarize_pairs

Reporter = Callable[[str], None]


def run(
    config: Config,
    *,
    resume: bool = False,
    log: Reporter = lambda s: print(s, file=sys.stderr),
    progress=None,
    on_facts=None,
) -> Path:
    """Run (or continue) a sweep; returns its results folder.

    Args:
      config: the sweep.
      resume: require an existing results folder to continue.
      log: where one-line status messages go.
      progress: optional `progress.Progress`-like object with
        `start(total_units, unit_images)`, `advance(units)` and `close()`.
      on_facts: with `config.report`, called with the report's numbers.
    """
    t_start = time.time()
    if config.mlflow is not None:
        mlflow_runs.check_store(config.mlflow)  # before hours of training, not after
    p = prepare(config)
    manifest = build_manifest(p)
    manifest_path = p.out / results.MANIFEST
    if resume and not manifest_path.exists():  # refuse before creating the folder
        raise SweepError(f"nothing to resume in {p.out}: it has no {results.MANIFEST}")
    results.prepare_dir(p.out)
    with lock.hold(p.out):  # one writer per folder, until the end
        results.remove_tmp(p.out)
        train_and_write(p, manifest, t_start=t_start, log=log, progress=progress,
                        on_facts=on_facts)
    return p.out


def train_and_write(p: Prepared, manifest: dict, *, t_start: float, log: Reporter,
                    progress, on_facts) -> None:
    """Train what is not done yet, join the tables, report; under the lock."""
    config = p.config
    manifest_path = p.out / results.MANIFEST
    size_hint, old = None, {}
    if manifest_path.exists():
        old = results.read_manifest(p.out)
        check_resumable(old, manifest, p.out)
        manifest["timings"] = old.get("timings", {})
        manifest["started"] = old.get("started")
        size_hint = old.get("replicas_per_step")
    manifest.setdefault("started", None)
    manifest["started"] = manifest["started"] or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results.write_json(manifest, manifest_path)
    results.write_parquet(poisoned_table(p), p.out / "poisoned.parquet")
    if p.backdoor is not None and p.backdoor.perturbs:  # clean-label: the pixels
        recorded = (old.get("attack") or {}).get("perturbation")
        p = perturbation.attach(p, recorded=recorded, log=log)
        manifest["attack"]["perturbation"] = p.perturbed.info
        results.write_json(manifest, manifest_path)

    done = results.done_replicas(p.out)
    todo = [i for i in range(p.grid.size) if i not in done]
    if done:
        log(f"resuming {p.out}: {len(done)} of {p.grid.size} replicas already done")
    if todo:
        size = train_local.chunk_size(p, todo, manifest, size_hint=size_hint)
        trainer = train_ray if config.cluster else train_local
        trainer.train_chunks(p, todo, size, manifest, log=log, progress=progress)
    finalize(p.out, manifest)
    manifest["timings"]["total_s"] = round(
        manifest["timings"].get("total_s", 0.0) + time.time() - t_start, 3
    )
    results.write_json(manifest, manifest_path)
    if config.report:
        path = write_report(p.out, threshold=config.threshold, on_facts=on_facts)
        log(f"report: {path}")
    if config.mlflow is not None:
        log(f"mlflow: {mlflow_runs.log_sweep(p.out, config.mlflow)}")


def finalize(out: Path, manifest: dict) -> None:
    """Join the chunks into the tidy tables and the summary (a backdoor's also
    asr.parquet, mean ASR per count, and asr_thresholds.parquet); mark complete."""
    metrics = results.read_chunks(out, "metrics")
    confusion = results.read_chunks(out, "confusion")
    results.write_parquet(metrics, out / "metrics.parquet")
    results.write_parquet(confusion, out / "confusion.parquet")
    summary = summarize_pairs(metrics, classes=classes_of(manifest))
    results.write_parquet(summary, out / "summary.parquet")
    if "attack" in manifest:  # a trigger backdoor: ASR per count, thresholds
        results.write_parquet(asr_by_count(metrics), out / "asr.parquet")
        results.write_parquet(
            threshold_table(metrics, n_train=manifest["data"]["n_train"]),
            out / "asr_thresholds.parquet")
    manifest["status"] = "complete"
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    manifest["n_diverged"] = int(metrics.groupby("replica")["diverged"].any().sum())
    results.write_json(manifest, out / results.MANIFEST)
