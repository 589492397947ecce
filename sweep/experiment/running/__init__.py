"""Running a sweep: the manifest, chunks trained here (`train_local`) or as Ray
tasks (`train_ray`), mid-chunk checkpoints, the time warning, progress, and
`run_sweep.run`, which ties them together under the folder's lock."""
