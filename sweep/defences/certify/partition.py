"""Which base model trains on which training image, by a hash of the image's bytes.

Deep Partition Aggregation (Levine & Feizi, ICLR 2021) trains base model i on
the training images whose hash is i mod k. Finite Aggregation (Wang, Levine &
Feizi, ICML 2022) first splits the data into k*d buckets, h_spl(x) = hash(x)
mod kd, then spreads every bucket to d of the kd base models, h_spr(b) =
{(b + s_j) mod kd : j < d} for d distinct shifts s_j (the authors' reference
code draws the shifts at random; here they come from a salted hash too).
Base model i therefore trains on the d buckets {(i - s_j) mod kd}: 1/k of the
data, like a DPA model, and each image reaches exactly d models. DPA is the
case d = 1, shifts = (0,).

Why a hash of the bytes and nothing else:
- never the label: relabelling an image leaves its bucket alone, so a label flip
  changes one bucket's content, not two;
- never the image's position or the other images: inserting or deleting one
  image must not move any other image, so the certificates' "one poisoned image
  touches one bucket" holds. This is also why the sizes are only balanced in
  law (multinomial, N/k +- sqrt(N/k)), never forced equal: equal cuts of a
  sorted list would shift every later image on one insertion.
The `seed` is a salt mixed into the hash, so several independent partitions
can be drawn (for intervals over "seeds") while each stays a pure function of
the image's bytes. Base models must also be deterministic given their bucket
contents (`members` orders them by hash, not by index, for that reason).
"""

from __future__ import annotations

import hashlib

import numpy as np

from sweep.errors import SweepError

_IMAGE = b"sweep-image"  # blake2b personalisations keep the two uses apart
_SPREAD = b"sweep-spread"


def _salt(seed: int) -> bytes:
    if not 0 <= seed < 2**128:
        raise SweepError(f"the partition seed must be in [0, 2**128), got {seed}")
    return int(seed).to_bytes(16, "little")


def _digest(data, salt: bytes, person: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8, salt=salt, person=person).digest()


def image_hashes(images: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """A 64-bit hash of every image's bytes, salted by `seed`.

    Args:
      images: (N, ...) uint8, e.g. (N, H, W, C); each image's bytes are read in
        C order, so the same pixels give the same hash wherever they sit.
      seed: the salt, an integer in [0, 2**128).

    Returns:
      (N,) uint64: blake2b (8-byte digest, 16-byte salt) of each image, read
      little-endian; the same on every platform and every call.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim < 2:
        raise SweepError(f"images must be uint8 (N, ...), got {images.dtype} "
                         f"{images.shape}")
    rows = np.ascontiguousarray(images).reshape(len(images), -1)  # (N, bytes)
    salt = _salt(seed)
    # One C call per image: about 0.3 s for 50,000 CIFAR images.
    blob = b"".join(_digest(row, salt, _IMAGE) for row in rows)
    return np.frombuffer(blob, dtype="<u8").astype(np.uint64)


def _check_sizes(k: int, d: int) -> None:
    if k < 1 or d < 1:
        raise SweepError(f"need k >= 1 partitions and d >= 1 copies, got k={k}, d={d}")


def partition_ids(images: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """DPA's partition of every image: hash mod k (Levine & Feizi 2021).

    Returns:
      (N,) int64 in [0, k).
    """
    _check_sizes(k, 1)
    return (image_hashes(images, seed=seed) % np.uint64(k)).astype(np.int64)


def bucket_ids(images: np.ndarray, k: int, d: int, *, seed: int = 0) -> np.ndarray:
    """Finite Aggregation's bucket of every image, h_spl(x) = hash mod kd.

    Returns:
      (N,) int64 in [0, k*d). With d = 1 it equals `partition_ids`.
    """
    _check_sizes(k, d)
    return (image_hashes(images, seed=seed) % np.uint64(k * d)).astype(np.int64)


def spread_shifts(k: int, d: int, *, seed: int = 0) -> np.ndarray:
    """The d distinct shifts s_j of FA's spreading rule h_spr(b) = {b + s_j mod kd}.

    Drawn by ranking the kd candidate shifts by a salted hash (and, for d = 1,
    fixed to 0 so that FA with d = 1 is DPA exactly); the same for every call,
    platform and NumPy version.

    Returns:
      (d,) int64, distinct values in [0, k*d), sorted.
    """
    _check_sizes(k, d)
    if d == 1:
        return np.zeros(1, np.int64)
    n, salt = k * d, _salt(seed)
    keys = [_digest(np.array([k, d, s], "<i8").tobytes(), salt, _SPREAD)
            for s in range(n)]
    order = np.argsort(np.frombuffer(b"".join(keys), "<u8"), kind="stable")
    return np.sort(order[:d]).astype(np.int64)


def models_of_bucket(shifts: np.ndarray, n_buckets: int) -> np.ndarray:
    """h_spr: the d models every bucket spreads to.

    Returns:
      (n_buckets, d) int64: row b is {(b + s_j) mod n_buckets}.
    """
    shifts = np.asarray(shifts, np.int64)
    return (np.arange(n_buckets)[:, None] + shifts[None, :]) % n_buckets


def buckets_of_model(shifts: np.ndarray, n_buckets: int) -> np.ndarray:
    """The d buckets every base model trains on (the inverse of h_spr).

    Returns:
      (n_models = n_buckets, d) int64: row i is {(i - s_j) mod n_buckets}.
    """
    shifts = np.asarray(shifts, np.int64)
    return (np.arange(n_buckets)[:, None] - shifts[None, :]) % n_buckets


def members(
    buckets: np.ndarray, hashes: np.ndarray, shifts: np.ndarray, n_buckets: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every base model's training images, as padded index rows.

    Within a row the images are ordered by hash (then by position, which only
    matters between byte-identical images), so a model's training order depends
    on its images, not on where the rest of the data put them.

    Args:
      buckets: (N,) int bucket of every image (`bucket_ids`, or `partition_ids`
        with shifts (0,)).
      hashes: (N,) uint64 the same images' `image_hashes`.
      shifts: (d,) the spreading shifts.
      n_buckets: k*d (k for DPA); also the number of base models.

    Returns:
      (index (n_buckets, M) int32, length (n_buckets,) int32): row i lists model
      i's images; entries at or past length[i] repeat the row's first index (a
      model with no image is padded with 0), the layout of `sweep.engine.Subsets`.
    """
    buckets = np.asarray(buckets, np.int64)
    shifts = np.asarray(shifts, np.int64)
    if buckets.shape != np.shape(hashes) or buckets.ndim != 1:
        raise SweepError(f"buckets {buckets.shape} and hashes {np.shape(hashes)} "
                         "must both be (N,)")
    if len(np.unique(shifts % n_buckets)) != len(shifts):
        raise SweepError(f"spreading shifts must be distinct, got {shifts.tolist()}")
    if buckets.size and not 0 <= buckets.min() <= buckets.max() < n_buckets:
        raise SweepError(f"bucket ids must lie in [0, {n_buckets})")
    n = len(buckets)
    model = ((buckets[None, :] + shifts[:, None]) % n_buckets).ravel()  # (d*N,)
    image = np.tile(np.arange(n), len(shifts))  # (d*N,)
    order = np.lexsort((image, np.asarray(hashes)[image], model))
    model, image = model[order], image[order]
    length = np.bincount(model, minlength=n_buckets).astype(np.int32)
    if n == 0:
        return np.zeros((n_buckets, 1), np.int32), length
    start = np.cumsum(length) - length  # (n_buckets,) first entry of each row
    col = np.arange(max(int(length.max()), 1))[None, :]  # (1, M)
    take = start[:, None] + np.where(col < length[:, None], col, 0)
    index = image[np.minimum(take, len(image) - 1)]  # empty rows: clipped, then 0
    return np.where(length[:, None] > 0, index, 0).astype(np.int32), length
