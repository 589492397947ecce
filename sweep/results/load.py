"""A finished results folder read back and checked: where statistics start."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sweep.errors import SweepError, one_line
from sweep.results.folder import MANIFEST
from sweep.results.tables import check_metrics


@dataclass(frozen=True)
class SweepTables:
    """One sweep's results folder, read and checked.

    confusion and poisoned are None when their file is absent (older sweeps).
    """

    path: Path
    manifest: dict
    metrics: pd.DataFrame
    confusion: pd.DataFrame | None
    poisoned: pd.DataFrame | None


def _read_table(path: Path, *, required: bool) -> pd.DataFrame | None:
    if not path.is_file():
        if required:
            raise SweepError(
                f"{path.parent} has no {path.name}: the sweep is partial or failed"
            )
        return None
    try:
        return pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several unrelated types
        raise SweepError(f"cannot read {path}: {one_line(error)}") from None


def load_results(results_dir: str | os.PathLike) -> SweepTables:
    """Read a finished sweep's results folder, refusing missing or partial ones.

    Args:
      results_dir: the folder holding manifest.json and metrics.parquet.

    Returns:
      The checked tables and manifest.
    """
    path = Path(results_dir)
    if not path.exists():
        raise SweepError(f"results folder {path} does not exist")
    if not path.is_dir():
        raise SweepError(f"{path} is not a folder")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise SweepError(f"{path} has no manifest.json: not a sweep results folder")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as error:
        raise SweepError(f"cannot read {manifest_path}: {one_line(error)}") from None
    if not isinstance(manifest, dict):
        raise SweepError(f"{manifest_path} is not a JSON object")
    status = manifest.get("status", "complete")
    if status != "complete":
        raise SweepError(
            f"sweep in {path} is not complete (manifest status {status!r}); "
            "let it finish or resume it"
        )
    metrics = _read_table(path / "metrics.parquet", required=True)
    check_metrics(metrics, source=str(path / "metrics.parquet"))
    return SweepTables(
        path=path,
        manifest=manifest,
        metrics=metrics,
        confusion=_read_table(path / "confusion.parquet", required=False),
        poisoned=_read_table(path / "poisoned.parquet", required=False),
    )
