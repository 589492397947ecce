"""The results folder: tidy parquet tables and the manifest, written atomically.

It knows the folder's layout and its tables' schema, not what produced them
(the experiment) nor what they mean (the statistics).

Modules:
  folder       atomic writes, the manifest, chunk files and mid-chunk states
  tables       the tidy tables' rows built from a chunk, and their checks
  load         a finished folder read back and checked (`load_results`)
  lock         one writer per folder
  environment  package versions, device, CPU, git commit
"""

from sweep.results.folder import (
    CHUNKS,
    MANIFEST,
    atomic_write_bytes,
    atomic_write_npz,
    chunk_id,
    disk_full_error,
    done_replicas,
    load_chunk_states,
    prepare_dir,
    read_chunks,
    read_manifest,
    remove_tmp,
    save_chunk_state,
    state_path,
    write_chunk,
    write_json,
    write_parquet,
)
from sweep.results.load import SweepTables, load_results
from sweep.results.tables import (
    CLEAN,
    METRIC_COLUMNS,
    attack_success,
    check_metrics,
    chunk_frames,
    poisoned_frame,
)

__all__ = [
    "CHUNKS",
    "CLEAN",
    "MANIFEST",
    "METRIC_COLUMNS",
    "SweepTables",
    "atomic_write_bytes",
    "atomic_write_npz",
    "attack_success",
    "check_metrics",
    "chunk_frames",
    "chunk_id",
    "disk_full_error",
    "done_replicas",
    "load_chunk_states",
    "load_results",
    "poisoned_frame",
    "prepare_dir",
    "read_chunks",
    "read_manifest",
    "remove_tmp",
    "save_chunk_state",
    "state_path",
    "write_chunk",
    "write_json",
    "write_parquet",
]
