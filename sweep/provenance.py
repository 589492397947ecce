"""What a sweep ran on and from: versions, device, commit, hashes, the manifest.

The one place environment and git are captured; `bench/` scripts import it too,
so a benchmark's header and a sweep's manifest describe a machine the same way.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sweep.errors import SweepError

if TYPE_CHECKING:
    from sweep.pipeline import Prepared

# The packages whose versions a manifest records.
MANIFEST_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "pandas", "pyarrow")


def versions(packages: tuple[str, ...] = MANIFEST_PACKAGES) -> dict:
    """Python's version and each installed package's (None when missing)."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def device() -> dict:
    """The first device's backend and kind, the device count, the host."""
    import jax

    dev = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "kind": dev.device_kind,
        "count": jax.device_count(),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
    }


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo, else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def git_commit(*, mark_dirty: bool = False) -> str | None:
    """HEAD of the checkout this code runs from, None outside git.

    Args:
      mark_dirty: append "+dirty" when tracked files have uncommitted changes
        (benchmarks do: their numbers belong to the code as it was run).
    """
    cwd = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              timeout=5, cwd=cwd).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = mark_dirty and git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return (head + ("+dirty" if head and dirty else "")) or None


def environment() -> dict:
    """Versions, device and commit, for the manifest."""
    return {
        "versions": versions(),
        "device": device(),
        "commit": git_commit(),
        "argv": sys.argv,
    }


def array_hash(a: np.ndarray) -> str:
    return "sha256:" + hashlib.sha256(np.asarray(a, np.int64).tobytes()).hexdigest()


def poisoned_hash(flipped: dict) -> str:
    """Hash of every (count, seed) -> flipped indices selection, in key order."""
    h = hashlib.sha256()
    for key in sorted(flipped):
        h.update(repr(key).encode())
        h.update(np.asarray(flipped[key], np.int64).tobytes())
    return "sha256:" + h.hexdigest()


def build_manifest(p: Prepared) -> dict:
    """The manifest of a prepared sweep, before any training."""
    c = p.config
    return {
        "sweep_id": p.out.name,
        "status": "running",
        "fingerprint": c.fingerprint(),
        "config": c.to_dict(),
        "class_names": list(p.dataset.class_names),
        "source_id": p.source_id,
        "target_id": p.target_id,
        "resolved_counts": list(p.grid.counts),
        "seeds_list": list(p.grid.seeds),
        "n_replicas": p.grid.size,
        "data": {
            "source": p.dataset.source,
            "hash": p.dataset.content_hash,
            "n_train": int(len(p.train_labels)),
            "n_test": int(len(p.dataset.test_labels)),
            "train_subset_hash": array_hash(p.train_rows),
        },
        "data_hash": p.dataset.content_hash,
        "poisoned_hash": poisoned_hash(p.pair_flipped if p.is_matrix else p.flipped),
        **({"pairs": [list(pair) for pair in p.pairs]} if p.is_matrix else {}),
        **({"transfer": p.transfer} if p.transfer else {}),
        **environment(),
        "timings": {},
    }


def check_resumable(old: dict, new: dict, out: Path) -> None:
    """Refuse to continue a folder made by a different sweep, saying what differs."""
    from sweep.config import MODEL_DEFAULTS, RUNTIME_FIELDS

    # The data spec may move (a copied folder); its content hash is what counts.
    # Fields added later (MODEL_DEFAULTS) read as their defaults in old folders.
    a = old.get("config", {})
    b = json.loads(json.dumps(new["config"]))  # tuples -> lists, as stored
    diff = [
        f"{k}: {a.get(k, MODEL_DEFAULTS.get(k))!r} -> {b[k]!r}"
        for k in b
        if k not in RUNTIME_FIELDS and k != "data"
        and a.get(k, MODEL_DEFAULTS.get(k)) != b[k]
    ]
    if diff:
        raise SweepError(
            f"{out} holds a different sweep ({'; '.join(diff)}); "
            "use another --out or the original options"
        )
    if old.get("data_hash") != new["data_hash"]:
        raise SweepError(
            f"{out} was run on different data ({old.get('data_hash')} there, "
            f"{new['data_hash']} now); use the same data or another --out"
        )
