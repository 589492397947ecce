"""The results folder: tidy parquet tables and the manifest, written atomically.

Layout of RESULTS_DIR:
  manifest.json          configuration, versions, device, data hash, timings
  chunks/<id>.*.parquet  one file pair per finished chunk of replicas
  metrics.parquet        replica x epoch x class, joined from the chunks
  confusion.parquet      replica x epoch x true x predicted test counts
  poisoned.parquet       count (x seed) -> flipped training indices
  summary.parquet        count x class deltas with intervals (sweep.stats)

A chunk counts as done once its metrics file exists; the confusion file is
written first, so a chunk is never half-done on disk. That is also how a resumed
sweep learns what is left. A long chunk also leaves `chunks/<id>.state.npz`
between epochs (weights, Adam moments, the epochs so far), so a resumed sweep
continues it mid-way rather than from its first epoch; it is deleted once the
chunk's tables are written.
"""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sweep.errors import SweepError

MANIFEST = "manifest.json"
CHUNKS = "chunks"


# mkstemp makes files only their owner can read; results are for sharing.
FILE_MODE = 0o644


# Write failures that freeing space fixes; everything written before stays valid.
DISK_FULL = {errno.ENOSPC: "no space left on device",
             errno.EDQUOT: "disk quota exceeded",
             errno.EFBIG: "file size limit exceeded"}


def disk_full_error(e: BaseException, path: Path) -> SweepError | None:
    """The one-line error for a full disk while writing `path`, else None."""
    why = DISK_FULL.get(e.errno) if isinstance(e, OSError) else None
    if why is None:
        return None
    return SweepError(f"{why} writing {path}; free space and rerun the same "
                      "command to resume")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, then rename over `path`."""
    path = Path(path)
    fd, tmp = _mkstemp(path)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        full = disk_full_error(e, path)
        if full is not None:
            raise full from None
        raise


def atomic_write_npz(path: Path, **arrays) -> None:
    """`np.savez` of the arrays, written atomically (`atomic_write_bytes`)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _mkstemp(path: Path) -> tuple[int, str]:
    try:
        return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # a full disk can refuse even the empty file
        full = disk_full_error(e, path)
        if full is not None:
            raise full from None
        raise


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Atomic parquet write: readers see the old file or the whole new one."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


def write_json(obj: dict, path: Path) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_manifest(out: Path) -> dict:
    path = Path(out) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SweepError(f"{out} has no {MANIFEST}: not a sweep results folder") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SweepError(f"{path} is not valid JSON ({e})") from None


def prepare_dir(out: Path) -> None:
    """Create the results folder, refusing a path that is a file."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SweepError(f"output path {out} exists and is not a folder")
    try:
        (out / CHUNKS).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepError(f"cannot create output folder {out}: {e.strerror}") from None


def remove_tmp(out: Path) -> None:
    """Delete temporary files a writer killed mid-write (kill -9) left behind.

    Only while holding the folder's lock (`sweep.results.lock`): a live writer's
    temporary files look just the same.
    """
    out = Path(out)
    for folder in (out, out / CHUNKS):
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def chunk_id(replicas: Sequence[int]) -> str:
    return f"r{min(replicas):05d}-{max(replicas):05d}"


def write_chunk(out: Path, replicas: Sequence[int], metrics: pd.DataFrame,
                confusion: pd.DataFrame) -> None:
    """Record one finished chunk (confusion first: metrics marks it done)."""
    cid = chunk_id(replicas)
    write_parquet(confusion, Path(out) / CHUNKS / f"{cid}.confusion.parquet")
    write_parquet(metrics, Path(out) / CHUNKS / f"{cid}.metrics.parquet")
    state_path(out, replicas).unlink(missing_ok=True)


def state_path(out: Path, replicas: Sequence[int]) -> Path:
    return Path(out) / CHUNKS / f"{chunk_id(replicas)}.state.npz"


def save_chunk_state(out: Path, replicas: Sequence[int], padded: int,
                     leaves: Sequence[np.ndarray], history: Sequence) -> None:
    """Checkpoint an unfinished chunk after `len(history)` epochs, atomically.

    Args:
      replicas: the chunk's replica ids; padded: the replica count it trains at
        (resuming at another count could change its floating-point results).
      leaves: the flattened training state (host arrays).
      history: one `engine.EpochMetrics` per finished epoch.
    """
    arrays = {"replicas": np.asarray(replicas, np.int64),
              "padded": np.int64(padded)}
    arrays.update({f"leaf_{i}": np.asarray(a) for i, a in enumerate(leaves)})
    for field in ("train_loss", "train_accuracy", "test_loss", "confusion",
                  "stamped_confusion"):
        values = [getattr(m, field, None) for m in history]
        if all(v is not None for v in values):  # stamped: trigger backdoors only
            arrays[f"history_{field}"] = np.stack(values)
    atomic_write_npz(state_path(out, replicas), **arrays)


def load_chunk_states(out: Path) -> list[dict]:
    """Checkpoints of unfinished chunks: replicas, padded, leaves, history fields.

    An unreadable checkpoint (it cannot be half-written, but a disk can fail) is
    deleted: its chunk simply starts again.
    """
    states = []
    for path in sorted((Path(out) / CHUNKS).glob("*.state.npz")):
        try:
            with np.load(path, allow_pickle=False) as z:
                n_leaves = sum(1 for k in z.files if k.startswith("leaf_"))
                states.append({
                    "path": path,
                    "replicas": [int(i) for i in z["replicas"]],
                    "padded": int(z["padded"]),
                    "leaves": [z[f"leaf_{i}"] for i in range(n_leaves)],
                    "history": {k.removeprefix("history_"): z[k]
                                for k in z.files if k.startswith("history_")},
                })
        except Exception:
            path.unlink(missing_ok=True)
    return states


def done_replicas(out: Path) -> set[int]:
    """Replicas whose chunk finished, read back from the chunk files."""
    done: set[int] = set()
    for path in sorted((Path(out) / CHUNKS).glob("*.metrics.parquet")):
        try:
            ids = pd.read_parquet(path, columns=["replica"])["replica"].unique()
        except Exception:  # an unreadable chunk is simply redone
            path.unlink(missing_ok=True)
            continue
        done.update(int(i) for i in ids)
    return done


def read_chunks(out: Path, kind: str) -> pd.DataFrame:
    """All finished chunks of one kind ("metrics" or "confusion"), in replica order."""
    chunks = Path(out) / CHUNKS
    frames = []
    for path in sorted(chunks.glob("*.metrics.parquet")):
        frames.append(pd.read_parquet(path.with_name(path.name.replace("metrics", kind))))
    if not frames:
        raise SweepError(f"{out} has no finished chunks")
    df = pd.concat(frames, ignore_index=True)
    per = ["class_id"] if kind == "metrics" else ["true_id", "pred_id"]
    keys = ["replica", "epoch", *per]
    # A chunk redone after an interrupted rename can repeat rows; keep one.
    return df.drop_duplicates(subset=keys, keep="last").sort_values(
        keys, ignore_index=True)
