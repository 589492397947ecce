"""A sweep's manifest: what it is (configuration, grid, hashes) and ran on.

Built before any training; a resumed sweep's manifest must match the folder's
(`check_resumable`), naming what differs when it does not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from sweep.data.hashing import index_hash
from sweep.errors import SweepError
from sweep.experiment.attacks import backdoors
from sweep.experiment.config import MODEL_DEFAULTS, RUNTIME_FIELDS
from sweep.experiment.prepare import Prepared
from sweep.results.environment import environment


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
            "train_subset_hash": index_hash(p.train_rows),
        },
        "data_hash": p.dataset.content_hash,
        "poisoned_hash": poisoned_hash(p.pair_flipped if p.is_matrix else p.flipped),
        **({"pairs": [list(pair) for pair in p.pairs]} if p.is_matrix else {}),
        **({"attack": p.backdoor.describe(
            p.dataset.class_names, len(p.train_labels),
            len(backdoors.candidates(p.train_labels, p.backdoor)))}
           if p.backdoor is not None else {}),
        **({"transfer": p.transfer} if p.transfer else {}),
        **environment(),
        "timings": {},
    }


def check_resumable(old: dict, new: dict, out: Path) -> None:
    """Refuse to continue a folder made by a different sweep, saying what differs."""
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
    then = (old.get("attack") or {}).get("trigger_hash")
    now = (new.get("attack") or {}).get("trigger_hash")
    if then != now:  # e.g. a --blend-image file that changed
        raise SweepError(
            f"{out} was run with another trigger ({then} there, {now} now); use "
            "the same trigger or another --out")
    if old.get("data_hash") != new["data_hash"]:
        raise SweepError(
            f"{out} was run on different data ({old.get('data_hash')} there, "
            f"{new['data_hash']} now); use the same data or another --out"
        )
