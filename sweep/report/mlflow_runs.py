"""MLflow tracking: a finished sweep as one parent run with a child run per replica.

`log_sweep` reads only a finished results folder (manifest.json and the parquet
tables), so it runs at the end of `--mlflow` sweeps and equally later, on any
sweep on disk. The parent run carries the configuration (params), provenance
(tags), the source/target deltas of summary.parquet (metrics) and the tables and
report (artifacts); each child carries one replica's per-epoch curves.

MLflow is an optional extra: it is imported inside the functions, so importing
this module never needs it. Everything goes through an explicit
`MlflowClient(tracking_uri=...)`: no global tracking URI or active run is left
in the caller's process. MLflow 3 refuses its file store (./mlruns) unless
MLFLOW_ALLOW_FILE_STORE=true; that is set only while logging to a file URI
someone asked for.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import time
import urllib.parse
import warnings
from datetime import datetime
from pathlib import Path

import pandas as pd

from sweep import stats
from sweep.errors import SweepError, one_line
from sweep.results.load import load_results
from sweep.results.tables import CLEAN

EXPERIMENT = "sweep"
INSTALL_HINT = (
    '--mlflow needs MLflow: pip install -e ".[mlflow]" (or pip install mlflow)'
)

# Config keys that say where output went, not what the sweep is.
NOT_PARAMS = ("out", "report", "mlflow")
# Per-epoch columns of metrics.parquet logged on every replica's run (those
# present: a backdoor's metrics also carry asr and robust_accuracy).
EPOCH_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "asr",
                 "robust_accuracy")
# summary.parquet column -> metric name prefix on the parent run.
SUMMARY_METRICS = {"delta_mean": "delta", "ci_low": "ci_low", "ci_high": "ci_high",
                   "p_value": "p_value", "p_adjusted": "p_adjusted"}
RESULT_FILES = ("manifest.json", "metrics.parquet", "summary.parquet",
                "confusion.parquet", "poisoned.parquet")
REPORT_FILES = ("report.md", "report.html")


def require():
    """Import MLflow or say how to install it, before a sweep trains for hours.

    Returns:
      The mlflow module.
    """
    try:
        import mlflow
    except ImportError:
        raise SweepError(INSTALL_HINT) from None
    except Exception as error:  # a broken install fails in other ways too
        raise SweepError(
            "--mlflow needs a working MLflow: import mlflow failed "
            f"({one_line(error)})"
        ) from None
    return mlflow


def resolve_uri(uri: str) -> str:
    """The tracking URI to use: "" is MLflow's own default.

    That is $MLFLOW_TRACKING_URI when set, else what this MLflow's `mlflow ui`
    opens in the same folder (sqlite:///mlflow.db on MLflow 3, ./mlruns on 2).
    Made absolute, so the runs land where the sweep was started and the printed
    URI can be pasted as is.
    """
    if uri != "":
        return uri
    import mlflow

    default = mlflow.get_tracking_uri()
    parsed = urllib.parse.urlparse(default)
    if parsed.scheme == "sqlite" and not default.startswith("sqlite:////"):
        return "sqlite:///" + str(Path.cwd() / default[len("sqlite:///"):])
    if parsed.scheme in ("", "file") and not Path(parsed.path).is_absolute():
        return (Path.cwd() / parsed.path).as_uri()
    return default


def check_store(uri: str) -> str:
    """Open the store at `uri` (creating the experiment) before a sweep trains,
    so a wrong URI or a server that is down costs seconds, not the whole sweep.

    Returns the resolved URI.
    """
    require()
    uri = resolve_uri(uri)
    retries = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
    saved = {k: os.environ.get(k) for k in retries}
    try:
        with _quiet_mlflow(), _file_store_allowed(uri):
            import mlflow

            os.environ.update({k: v for k, v in retries.items() if saved[k] is None})
            experiment(mlflow.MlflowClient(tracking_uri=uri))
    except SweepError:
        raise
    except Exception as error:
        raise SweepError(
            f"cannot use the MLflow store at {uri}: {one_line(error)[:300]}"
        ) from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
    return uri


def is_file_store(uri: str) -> bool:
    """Whether MLflow keeps this URI's runs in plain folders (its file store)."""
    return urllib.parse.urlparse(uri).scheme in ("", "file")


def log_sweep(out: Path, uri: str) -> str:
    """Log the finished sweep in `out` to the MLflow store at `uri`.

    A sweep already logged there (a FINISHED parent run with the same sweep_id
    and fingerprint) is not logged twice.

    Args:
      out: a finished results folder.
      uri: tracking URI; "" for MLflow's default (see `resolve_uri`).

    Returns:
      One line saying what was logged where.

    Raises:
      SweepError: MLflow missing, `out` not a finished sweep, or logging failed
        (runs started by this call are then marked FAILED).
    """
    require()
    out = Path(out)
    sweep = read_sweep(out)
    uri = resolve_uri(uri)
    try:
        with _quiet_mlflow(), _file_store_allowed(uri):
            import mlflow

            client = mlflow.MlflowClient(tracking_uri=uri)
            experiment_id = experiment(client)
            old = logged_run(client, experiment_id, sweep["manifest"])
            if old is not None:
                return f"sweep {sweep['id']} already logged as run {old} in {uri}"
            run_id, n_children = log_runs(client, experiment_id, sweep)
    except Exception as error:  # SweepError too: say the results are safe
        raise SweepError(
            f"logging to MLflow at {uri} failed: {one_line(error)[:500]} "
            f"(the sweep's results are safe in {out})"
        ) from None
    line = (f"logged sweep {sweep['id']} as run {run_id} (experiment "
            f"'{EXPERIMENT}', {n_children} replica runs) in {uri}")
    if is_file_store(uri) and _file_store_guarded():
        line += (" (view: MLFLOW_ALLOW_FILE_STORE=true mlflow ui "
                 f"--backend-store-uri {uri})")
    return line


# Reading the results folder.


def read_sweep(out: Path) -> dict:
    """The manifest and tables of a finished sweep, checked, plus the names used.

    summary.parquet is recomputed in memory if absent, so logging never writes
    to the results folder.
    """
    results = load_results(out)
    manifest, metrics = results.manifest, results.metrics
    summary_path = out / "summary.parquet"
    if summary_path.is_file():
        try:
            summary = pd.read_parquet(summary_path)
        except Exception as error:  # pyarrow raises several unrelated types
            raise SweepError(
                f"cannot read {summary_path}: {one_line(error)}"
            ) from None
    else:
        summary = stats.summarize(metrics, classes=stats.classes_of(manifest))
    names = list(manifest.get("class_names") or [])
    pairs = [tuple(int(i) for i in pair) for pair in manifest.get("pairs") or []]
    # An all-to-one backdoor has no source class (CLEAN).
    ids = [i for i in (manifest.get("source_id"), manifest.get("target_id"))
           if i != CLEAN]
    used = sorted({i for pair in pairs for i in pair}) if pairs else list(ids)
    if len(names) == 0 or any(i is None or not 0 <= i < len(names) for i in used):
        raise SweepError(f"{out}/manifest.json lacks class_names/source_id/target_id")
    return {
        "out": out,
        "id": str(manifest.get("sweep_id") or out.name),
        "manifest": manifest,
        "metrics": metrics,
        "summary": summary,
        # An attack matrix's (source, target) pairs; empty for a one-pair sweep.
        "pairs": pairs,
        "classes": class_keys({i: names[i] for i in used}),
    }


def class_keys(names: dict[int, str]) -> dict[int, str]:
    """class id -> the name's form usable in a metric key, distinct per class.

    MLflow keys allow letters, digits and `_ - . /` and spaces; anything else
    (and `/`, which reads as a folder) becomes `_`.
    """
    keys = {}
    for class_id, name in names.items():
        key = re.sub(r"[^\w.\- ]", "_", str(name)).strip(" .") or f"class{class_id}"
        keys[class_id] = key if key not in keys.values() else f"{key}{class_id}"
    return keys


# What gets logged.


def experiment(client) -> str:
    """The id of the "sweep" experiment, created on first use."""
    found = client.get_experiment_by_name(EXPERIMENT)
    if found is None:
        return client.create_experiment(EXPERIMENT)
    if found.lifecycle_stage != "active":
        raise SweepError(
            f"MLflow experiment '{EXPERIMENT}' is deleted: restore it (mlflow "
            "experiments restore) or purge it (mlflow gc), then log again"
        )
    return found.experiment_id


def logged_run(client, experiment_id: str, manifest: dict) -> str | None:
    """The id of a FINISHED parent run of this very sweep, if there is one.

    Filtering on the fingerprint narrows the search; the exact tag values are
    compared here, which spares quoting arbitrary folder names in the filter.
    """
    query = "tags.run_kind = 'sweep' and attributes.status = 'FINISHED'"
    fingerprint = str(manifest.get("fingerprint", ""))
    if re.fullmatch(r"[\w.\-]+", fingerprint):
        query += f" and tags.fingerprint = '{fingerprint}'"
    for run in client.search_runs([experiment_id], filter_string=query):
        tags = run.data.tags
        if (tags.get("sweep_id") == str(manifest.get("sweep_id"))
                and tags.get("fingerprint") == fingerprint):
            return run.info.run_id
    return None


def log_runs(client, experiment_id: str, sweep: dict) -> tuple[str, int]:
    """Create the parent and child runs; returns (parent run id, children).

    The parent is marked FINISHED last, so only a complete logging counts as
    "already logged". On an error every run still open is marked FAILED. The
    parent's start and end are the sweep's (manifest started/finished), so its
    duration in the UI is the sweep's, however much later it is logged.
    """
    manifest = sweep["manifest"]
    open_runs = []
    try:
        parent = client.create_run(
            experiment_id, start_time=_ms(manifest.get("started")),
            run_name=sweep["id"], tags=parent_tags(sweep),
        ).info.run_id
        open_runs.append(parent)
        log_batches(client, parent, params=parent_params(manifest),
                    metrics=parent_metrics(sweep))
        log_files(client, parent, sweep["out"])
        replicas = replica_table(sweep["metrics"])
        for replica, row in replicas.iterrows():
            pair = pair_text(sweep, row)
            child = client.create_run(
                experiment_id,
                run_name=(f"{pair} " if pair else "")
                + f"count={row['count']} seed={row['seed']}",
                tags=child_tags(sweep, parent, row),
            ).info.run_id
            open_runs.append(child)
            log_batches(client, child, params=child_params(replica, row, pair),
                        metrics=child_metrics(sweep, replica, row))
            client.set_terminated(child, "FINISHED")
            open_runs.remove(child)
        client.set_terminated(
            parent, "FINISHED", end_time=_ms(manifest.get("finished"))
        )
        open_runs.remove(parent)
        return parent, len(replicas)
    except BaseException as error:
        status = "FAILED" if isinstance(error, Exception) else "KILLED"
        for run_id in reversed(open_runs):
            with contextlib.suppress(Exception):  # the first error is the one to tell
                client.set_terminated(run_id, status)
        raise


def parent_tags(sweep: dict) -> dict[str, str]:
    """Provenance a run is searched and compared by (tags, unlike params, can
    be filtered on without knowing the config)."""
    m = sweep["manifest"]
    device = m.get("device") or {}
    tags = {
        "run_kind": "sweep",
        "sweep_id": sweep["id"],
        "fingerprint": m.get("fingerprint"),
        "commit": m.get("commit"),
        "mlflow.source.git.commit": m.get("commit"),
        "device_kind": device.get("kind"),
        "device_backend": device.get("backend"),
        "data_hash": m.get("data_hash"),
        "poisoned_hash": m.get("poisoned_hash"),
        "n_diverged": m.get("n_diverged"),
        "results_dir": str(sweep["out"].resolve()),
        "mlflow.note.content": describe(sweep),
    }
    return {k: _text(v, 8000) for k, v in tags.items() if v is not None}


def describe(sweep: dict) -> str:
    """One sentence for the run's description in the MLflow UI."""
    m, classes = sweep["manifest"], sweep["classes"]
    config = m.get("config") or {}
    counts = ", ".join(str(c) for c in m.get("resolved_counts") or [])
    attack = (f"attack matrix of {len(sweep['pairs'])} pairs" if sweep["pairs"]
              else f"{classes.get(m['source_id'], 'all')} -> {classes[m['target_id']]}")
    return (
        f"Label poisoning sweep ({config.get('strategy', 'flip')}) "
        f"{attack}: counts {counts} x "
        f"{len(m.get('seeds_list') or [])} seeds, {config.get('epochs')} epochs; "
        f"results in {sweep['out'].resolve()}"
    )


def parent_params(manifest: dict) -> dict[str, str]:
    """The config (what decides the numbers), data and library versions."""
    config = manifest.get("config") or {}
    names = manifest["class_names"]
    params = {k: v for k, v in config.items() if k not in NOT_PARAMS}
    if manifest.get("pairs"):
        params["pairs"] = [f"{names[s]}:{names[t]}" for s, t in manifest["pairs"]]
    else:
        source = manifest["source_id"]
        params["source_class"] = "all" if source == CLEAN else names[source]
        params["target_class"] = names[manifest["target_id"]]
    params.update({
        "resolved_counts": manifest.get("resolved_counts"),
        "n_replicas": manifest.get("n_replicas"),
        "poisoned_hash": manifest.get("poisoned_hash"),
    })
    for group in ("data", "versions"):
        for k, v in (manifest.get(group) or {}).items():
            params[f"{group}.{k}"] = v
    return {_key(k): _param_text(v) for k, v in params.items()}


def parent_metrics(sweep: dict) -> list[tuple[str, float, int]]:
    """(key, value, step) of the sweep's answers.

    Per class and count, `delta_<class>_count_<N>` and its interval and
    p-values; `delta_<class>` again with step=count so MLflow draws the
    dose-response. Clean accuracy at the analysed epoch, and the timings.
    """
    summary, classes, metrics = sweep["summary"], sweep["classes"], sweep["metrics"]
    rows = []
    for _, row in summary[summary["class_id"].isin(list(classes))].iterrows():
        name, count = classes[int(row["class_id"])], int(row["count"])
        group = ""
        if sweep["pairs"]:  # each pair's own source and target, grouped by pair
            pair = (int(row["source"]), int(row["target"]))
            if int(row["class_id"]) not in pair:
                continue
            group = f"{classes[pair[0]]}_to_{classes[pair[1]]}/"
        for column, prefix in SUMMARY_METRICS.items():
            if column in row.index:
                rows.append((f"{group}{prefix}_{name}_count_{count}", row[column], 0))
        rows.append((f"{group}delta_{name}", row["delta_mean"], count))
    epoch = int(summary["epoch"].max()) if "epoch" in summary and len(summary) \
        else int(metrics["epoch"].max())
    clean = metrics[(metrics["count"] == 0) & (metrics["epoch"] == epoch)]
    if "test_accuracy" in clean:
        per_replica = clean.groupby("replica")["test_accuracy"].first()
        rows.append(("clean_accuracy", per_replica.mean(), 0))
    for class_id, name in classes.items():
        rows.append((f"clean_accuracy_{name}",
                     clean.loc[clean["class_id"] == class_id, "accuracy"].mean(), 0))
    if "asr" in metrics:  # a backdoor: its success per count, and as a curve
        for r in stats.asr_by_count(metrics, epoch=epoch).itertuples():
            rows += [(f"asr_count_{r.count}", r.asr_mean, 0), ("asr", r.asr_mean,
                     r.count), (f"robust_accuracy_count_{r.count}", r.robust_mean, 0)]
    for k, v in (sweep["manifest"].get("timings") or {}).items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            rows.append((_key(k), v, 0))
    return rows


def replica_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per replica: count, seed, paired, diverged (any epoch), and an
    attack matrix's source and target (CLEAN on the shared clean replicas)."""
    pair = {k: (k, "first") for k in ("source", "target") if k in metrics}
    table = metrics.groupby("replica").agg(
        count=("count", "first"), seed=("seed", "first"),
        paired=("paired", "first"), diverged=("diverged", "any"), **pair,
    )
    return table.sort_index()


def pair_text(sweep: dict, row: pd.Series) -> str:
    """"cat:dog" for a matrix replica, "clean" for the shared clean twin; "" for
    a one-pair sweep."""
    if not sweep["pairs"]:
        return ""
    if int(row["source"]) == CLEAN:
        return "clean"
    names = sweep["manifest"]["class_names"]
    return f"{names[int(row['source'])]}:{names[int(row['target'])]}"


def child_tags(sweep: dict, parent: str, row: pd.Series) -> dict[str, str]:
    tags = {
        "mlflow.parentRunId": parent,
        "run_kind": "replica",
        "sweep_id": sweep["id"],
        "fingerprint": str(sweep["manifest"].get("fingerprint", "")),
    }
    if row["diverged"]:
        tags["diverged"] = "true"
    return tags


def child_params(replica: int, row: pd.Series, pair: str = "") -> dict[str, str]:
    return {
        **({"pair": pair} if pair else {}),
        "replica": str(int(replica)),
        "count": str(int(row["count"])),
        "seed": str(int(row["seed"])),
        "paired": str(bool(row["paired"])),
        "diverged": str(bool(row["diverged"])),
    }


def child_metrics(sweep: dict, replica: int, row: pd.Series | None = None
                  ) -> list[tuple[str, float, int]]:
    """(key, value, epoch) of one replica's curves, source and target accuracy too
    (a matrix replica: its pair's; the shared clean twin: every pair's classes)."""
    rows = sweep["metrics"]
    rows = rows[rows["replica"] == replica]
    out = []
    per_epoch = rows.groupby("epoch").first()
    for column in EPOCH_METRICS:
        if column in per_epoch:
            out += [(column, v, int(e)) for e, v in per_epoch[column].items()]
    classes = sweep["classes"]
    if sweep["pairs"] and row is not None and int(row["source"]) != CLEAN:
        classes = {i: classes[i] for i in (int(row["source"]), int(row["target"]))}
    for class_id, name in classes.items():
        accuracy = rows[rows["class_id"] == class_id].set_index("epoch")["accuracy"]
        out += [(f"accuracy_{name}", v, int(e)) for e, v in accuracy.items()]
    return out


def log_batches(client, run_id: str, *, params: dict[str, str],
                metrics: list[tuple[str, float, int]]) -> None:
    """log_batch within MLflow's per-request limits.

    Non-finite values (a diverged replica's losses, p-values of too few seeds)
    are left out: stores disagree on them (SQL stores turn inf into 1.8e308).
    """
    from mlflow.entities import Metric, Param

    max_params, max_metrics = _batch_limits()
    items = list(params.items())
    for i in range(0, len(items), max_params):
        batch = [Param(k, v) for k, v in items[i:i + max_params]]
        client.log_batch(run_id, params=batch)
    now = int(time.time() * 1000)
    finite = [
        Metric(key, float(value), now, int(step))
        for key, value, step in metrics
        if value is not None and math.isfinite(float(value))
    ]
    for i in range(0, len(finite), max_metrics):
        client.log_batch(run_id, metrics=finite[i:i + max_metrics])


def log_files(client, run_id: str, out: Path) -> None:
    """Tables and manifest under results/, the report and figures under report/."""
    for name in RESULT_FILES:
        if (out / name).is_file():
            client.log_artifact(run_id, str(out / name), "results")
    report = [out / n for n in REPORT_FILES] + sorted(out.glob("*.png"))
    for path in report:
        if path.is_file():
            client.log_artifact(run_id, str(path), "report")


# MLflow's environment.


@contextlib.contextmanager
def _file_store_allowed(uri: str):
    """Let MLflow open a file store while logging, then restore the environment.

    MLflow 3.x refuses its file store (./mlruns, "maintenance mode") unless
    MLFLOW_ALLOW_FILE_STORE=true; a user who asked for a file store gets one.
    """
    name = "MLFLOW_ALLOW_FILE_STORE"
    before = os.environ.get(name)
    if is_file_store(uri) and before is None:
        os.environ[name] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)


def _file_store_guarded() -> bool:
    """Whether this MLflow refuses file stores without MLFLOW_ALLOW_FILE_STORE."""
    import mlflow.environment_variables as env

    return hasattr(env, "MLFLOW_ALLOW_FILE_STORE")


@contextlib.contextmanager
def _quiet_mlflow():
    """Hide MLflow's and its database layer's deprecation chatter and INFO lines
    (e.g. creating SQLite tables) while logging; errors still surface."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        with warnings.catch_warnings():
            for category in (DeprecationWarning, FutureWarning, UserWarning):
                warnings.filterwarnings(
                    "ignore", category=category, module=r"(mlflow|sqlalchemy|alembic)"
                )
            yield
    finally:
        logger.setLevel(level)


def _batch_limits() -> tuple[int, int]:
    """(params, metrics) per log_batch call: MLflow's limits, 100 and 1000."""
    try:
        from mlflow.utils import validation
    except ImportError:
        return 100, 1000
    return (getattr(validation, "MAX_PARAMS_TAGS_PER_BATCH", 100),
            getattr(validation, "MAX_METRICS_PER_BATCH", 1000))


def _param_limit() -> int:
    try:
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH
    except ImportError:
        return 500  # the oldest MLflow limit
    return MAX_PARAM_VAL_LENGTH


# Small helpers.


def _param_text(value) -> str:
    """A param value: lists comma-joined, everything else str(), within the limit."""
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    return _text(value, _param_limit())


def _text(value, limit: int) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key(name: str) -> str:
    """A param/metric key MLflow accepts."""
    return re.sub(r"[^\w.\-/ ]", "_", str(name)) or "_"


def _ms(timestamp: str | None) -> int | None:
    """Milliseconds since the epoch of a manifest time ("%Y-%m-%dT%H:%M:%S%z")."""
    if not timestamp:
        return None
    try:
        when = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S%z")
    except (TypeError, ValueError):
        return None
    return int(when.timestamp() * 1000)
