"""One writer per results folder: a lock file naming the process that holds it.

Two sweeps writing one folder would interleave chunks and checkpoints and each
delete the other's temporary files, so the second refuses, naming the first.
The lock is `RESULTS_DIR/.lock`, JSON {pid, host, started, proc_start}, created
with O_EXCL (atomic on local and NFSv3+ file systems). A lock left by a process
that died (kill -9, a power cut) is stale and is taken over when that process
ran on this host and is gone (or its pid now belongs to a later process); a
lock from another host cannot be checked, so it is refused with the way out.
Taking over happens under an flock on `.lock.guard`, so two processes that
find the same stale lock cannot both take it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import time
from pathlib import Path

from sweep.errors import SweepError
from sweep.results.folder import disk_full_error

LOCK = ".lock"


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may hold spaces, so count from its end.
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(holder: dict) -> bool:
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        pass
    recorded = holder.get("proc_start")
    return recorded is None or _proc_start(pid) in (None, recorded)


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: half-written by a creator that died


def _describe(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started "
            f"{holder.get('started', '?')}")


@contextlib.contextmanager
def hold(out: Path):
    """Hold the lock on results folder `out` (which exists) for the block."""
    path = Path(out) / LOCK
    me = {"pid": os.getpid(), "host": platform.node(),
          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
          "proc_start": _proc_start(os.getpid())}
    _acquire(path, me, out)
    try:
        yield
    finally:
        if _read(path) == me:
            path.unlink(missing_ok=True)


def _flock(guard, out: Path, wait_s: float = 30.0) -> None:
    # Held only for a read and a small write; a holder frozen inside (stopped,
    # a hung disk) must not freeze this process too.
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise SweepError(
                    f"another process has been taking the lock of {out} for "
                    f"{wait_s:.0f} s; check for a stuck sweep and rerun"
                ) from None
            time.sleep(0.05)


def _acquire(path: Path, me: dict, out: Path) -> None:
    with open(path.with_name(LOCK + ".guard"), "a") as guard:
        _flock(guard, out)  # released when the file closes
        holder = _read(path)
        if holder is not None:
            here = holder.get("host") == me["host"]
            if holder and not here:
                raise SweepError(
                    f"{out} is being written by another sweep ({_describe(holder)}); "
                    f"if that sweep is no longer running, delete {path} and rerun"
                )
            if holder and _alive(holder):
                raise SweepError(
                    f"{out} is being written by another sweep ({_describe(holder)}); "
                    "wait for it to finish or use another --out"
                )
            path.unlink(missing_ok=True)  # stale: its process is gone
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(me, f)
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        except OSError as e:
            full = disk_full_error(e, path)
            if full is None:
                raise
            raise full from None
