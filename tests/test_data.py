"""sweep.data: every source format reads the same pixels, and bad input is one line."""

from __future__ import annotations

import io
import json
import os
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sweep import data
from sweep.errors import SweepError
from tests.fixtures_data import (
    encode_image,
    shared_slice,
    synthetic_dataset,
    write_cifar_batches,
    write_cifar_tarball,
    write_image_folder,
    write_parquet_dataset,
)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """Keeps caches in tmp and ignores whatever data variables the shell has."""
    monkeypatch.setenv("SWEEP_CACHE", str(tmp_path / "default-cache"))
    for name in ("SWEEP_DATA", "SWEEP_CIFAR_URL", "SWEEP_CIFAR_MD5"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SWEEP_NO_TFDS", "1")


def assert_same_dataset(got: data.Dataset, want: data.Dataset) -> None:
    np.testing.assert_array_equal(got.train_images, want.train_images)
    np.testing.assert_array_equal(got.train_labels, want.train_labels)
    np.testing.assert_array_equal(got.test_images, want.test_images)
    np.testing.assert_array_equal(got.test_labels, want.test_labels)
    assert got.class_names == want.class_names
    assert got.content_hash == want.content_hash
    assert got.train_images.dtype == np.uint8 and got.train_labels.dtype == np.int32


def one_line_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# Every format reads the same images the same way.


def _parquet_flat(root, ds):
    return write_parquet_dataset(root, ds)


def _parquet_flat_single_file(root, ds):
    return write_parquet_dataset(root, ds) / "test.parquet"


def _parquet_hub_sharded(root, ds):
    return write_parquet_dataset(root, ds, layout="hub", train_shards=3)


def _parquet_hub_no_names(root, ds):
    # Ten classes and no names: the loader falls back to CIFAR-10's.
    return write_parquet_dataset(root, ds, layout="hub", class_names_metadata=False)


def _cifar_batches(root, ds):
    return write_cifar_batches(root, ds)


def _cifar_batches_parent_bytes_keys(root, ds):
    return write_cifar_batches(root, ds, bytes_keys=True).parent


def _image_folder(root, ds):
    return write_image_folder(root, ds)


@pytest.mark.parametrize(
    "write",
    [
        _parquet_flat,
        _parquet_flat_single_file,
        _parquet_hub_sharded,
        _parquet_hub_no_names,
        _cifar_batches,
        _cifar_batches_parent_bytes_keys,
        _image_folder,
    ],
)
def test_every_format_loads_the_same_pixels(write, tmp_path):
    want = shared_slice(20, 5)
    path = write(tmp_path / "src", want)
    got = data.load(str(path), cache_dir=tmp_path / "cache")
    assert_same_dataset(got, want)
    assert got.train_images.shape == (200, 32, 32, 3)
    assert got.source == str(path.resolve())


def test_parquet_jpeg_bytes_decode_like_pillow(tmp_path):
    # The sample keeps the original JPEG bytes: the parquet path must decode
    # them exactly as a plain Pillow decode does.
    ds = data.load("sample", cache_dir=tmp_path)
    table = pq.read_table(data.sample_path() / "train.parquet")
    for row in (0, 4321, table.num_rows - 1):
        blob = table.column("image")[row].as_py()
        want = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
        np.testing.assert_array_equal(ds.train_images[row], want)
        assert ds.train_labels[row] == table.column("label")[row].as_py()


def test_unnamed_labels_get_generic_class_names(tmp_path):
    ds = synthetic_dataset(n_classes=3)
    path = write_parquet_dataset(tmp_path, ds, class_names_metadata=False)
    got = data.load(path, cache_dir=tmp_path / "cache")
    assert got.class_names == ("class_0", "class_1", "class_2")
    np.testing.assert_array_equal(got.train_images, ds.train_images)


def test_sweep_data_env_is_used_when_no_spec(tmp_path, monkeypatch):
    ds = synthetic_dataset()
    path = write_parquet_dataset(tmp_path / "src", ds)
    monkeypatch.setenv("SWEEP_DATA", str(path))
    got = data.load()
    assert got.source == str(path.resolve())
    assert got.content_hash == ds.content_hash
    # The default cache is $SWEEP_CACHE.
    assert len(list((tmp_path / "default-cache").glob("*.npz"))) == 1


def test_sample(tmp_path):
    ds = data.load("sample", cache_dir=tmp_path)
    assert ds.source == "sample"
    assert ds.class_names == data.CIFAR10_CLASSES
    assert ds.train_images.shape == (10_000, 32, 32, 3)
    assert ds.test_images.shape == (2_000, 32, 32, 3)
    assert ds.train_images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(ds.train_labels), [1000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.test_labels), [200] * 10)
    # Rows are sorted by class.
    assert np.all(np.diff(ds.train_labels) >= 0)
    again = data.load("sample", cache_dir=tmp_path)
    assert (
        again.content_hash
        == ds.content_hash
        == data.content_hash(
            ds.train_images,
            ds.train_labels,
            ds.test_images,
            ds.test_labels,
            ds.class_names,
        )
    )


# Content hash and the Dataset itself.


def test_content_hash_tracks_content_and_split_point():
    ds = synthetic_dataset()
    args = (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels)
    assert data.content_hash(*args, ds.class_names) == ds.content_hash
    assert ds.content_hash.startswith("sha256:") and len(ds.content_hash) == 71

    flipped = ds.train_labels.copy()
    flipped[0] = 1
    changed = data.content_hash(args[0], flipped, *args[2:], ds.class_names)
    assert changed != ds.content_hash

    renamed = data.content_hash(*args, ("a", "b", "c"))
    assert renamed != ds.content_hash

    # The same bytes split differently between train and test differ.
    images = np.concatenate([ds.train_images, ds.test_images])
    labels = np.concatenate([ds.train_labels, ds.test_labels])
    k = len(ds.train_images)
    moved = data.content_hash(
        images[: k + 1], labels[: k + 1], images[k + 1 :], labels[k + 1 :], ("a",)
    )
    unmoved = data.content_hash(images[:k], labels[:k], images[k:], labels[k:], ("a",))
    assert moved != unmoved


def test_dataset_arrays_are_read_only_views():
    images = np.zeros((3, 32, 32, 3), np.uint8)
    labels = np.array([0, 1, 0])
    ds = data.dataset_from_arrays(
        images, labels, images, labels, ("a", "b"), source="x"
    )
    with pytest.raises(ValueError):
        ds.train_labels[0] = 1
    images[0, 0, 0, 0] = 7  # the caller's array stays writeable
    assert ds.train_labels.dtype == np.int32
    with pytest.raises(SweepError, match="out of range"):
        data.dataset_from_arrays(images, labels, images, labels, ("a",), source="x")


# The download path, with local files standing in for the network.


def test_download_from_file_url(tmp_path, monkeypatch):
    want = shared_slice(20, 5)
    tarball, md5 = write_cifar_tarball(tmp_path / "remote", want)
    monkeypatch.setenv("SWEEP_CIFAR_URL", tarball.as_uri())
    monkeypatch.setenv("SWEEP_CIFAR_MD5", md5)
    monkeypatch.setenv("SWEEP_CACHE", str(tmp_path / "cache"))
    got = data.load(None)
    assert_same_dataset(got, want)
    assert got.source == f"download:{tarball.as_uri()}"

    # A finished download needs no network: the URL can vanish.
    monkeypatch.setenv("SWEEP_CIFAR_URL", (tmp_path / "gone.tar.gz").as_uri())
    assert data.load(None).content_hash == want.content_hash
    # Only the extracted batches are kept.
    kept = sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert kept == sorted(
        ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]
    )


def test_download_with_wrong_md5_is_refused(tmp_path, monkeypatch):
    tarball, md5 = write_cifar_tarball(tmp_path / "remote", synthetic_dataset())
    monkeypatch.setenv("SWEEP_CIFAR_URL", tarball.as_uri())
    monkeypatch.setenv("SWEEP_CIFAR_MD5", "0" * 32)
    with pytest.raises(SweepError) as excinfo:
        data.load(None, cache_dir=tmp_path / "cache")
    one_line_error(excinfo, "md5", md5, "0" * 32)
    assert not list((tmp_path / "cache").rglob("data_batch_1"))


def test_download_checks_the_canonical_md5_without_an_override(tmp_path, monkeypatch):
    tarball, _ = write_cifar_tarball(tmp_path / "remote", synthetic_dataset())
    monkeypatch.setenv("SWEEP_CIFAR_URL", tarball.as_uri())
    with pytest.raises(SweepError) as excinfo:
        data.load(None, cache_dir=tmp_path / "cache")
    one_line_error(excinfo, data.CIFAR_MD5)


def test_unreachable_download_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEP_CIFAR_URL", (tmp_path / "missing.tar.gz").as_uri())
    with pytest.raises(SweepError) as excinfo:
        data.load(None, cache_dir=tmp_path / "cache")
    message = one_line_error(excinfo, "--data PATH", "--data sample")
    assert message.startswith("no data given and CIFAR-10 could not be downloaded (")
    assert "No such file" in message


@pytest.mark.parametrize(
    "member", ["cifar-10-batches-py/../escaped", "../escaped", "other/escaped"]
)
def test_download_refuses_members_outside_the_batches_folder(
    member, tmp_path, monkeypatch
):
    tarball, md5 = write_cifar_tarball(
        tmp_path / "remote", synthetic_dataset(), extra_member=member
    )
    monkeypatch.setenv("SWEEP_CIFAR_URL", tarball.as_uri())
    monkeypatch.setenv("SWEEP_CIFAR_MD5", md5)
    with pytest.raises(SweepError) as excinfo:
        data.load(None, cache_dir=tmp_path / "sub" / "cache")
    one_line_error(excinfo, "refusing archive member", member)
    assert not [p for p in tmp_path.rglob("escaped")]
    assert not list((tmp_path / "sub").rglob("data_batch_1"))


# The decoded-array cache.


def test_second_load_reads_the_cache(tmp_path):
    ds = synthetic_dataset()
    src = write_parquet_dataset(tmp_path / "src", ds)
    cache = tmp_path / "cache"
    first = data.load(src, cache_dir=cache)
    (npz,) = cache.glob("*.npz")
    stamp = npz.stat().st_mtime_ns

    # Garble the source but keep its size and mtime: only the cache can still
    # give the right pixels.
    train = src / "train.parquet"
    st = train.stat()
    train.write_bytes(b"\0" * st.st_size)
    os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = data.load(src, cache_dir=cache)
    assert_same_dataset(second, first)
    assert list(cache.glob("*.npz")) == [npz] and npz.stat().st_mtime_ns == stamp

    # A changed mtime invalidates the cache, so the garbled file is now read.
    os.utime(train, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(SweepError) as excinfo:
        data.load(src, cache_dir=cache)
    one_line_error(excinfo, str(train), "not a readable parquet")


def test_changed_source_replaces_its_cache(tmp_path):
    src, cache = tmp_path / "src", tmp_path / "cache"
    write_parquet_dataset(src, synthetic_dataset(seed=0))
    data.load(src, cache_dir=cache)
    other = synthetic_dataset(seed=1)
    write_parquet_dataset(src, other)
    os.utime(src / "train.parquet", ns=(0, 10**18))  # a surely different mtime
    assert data.load(src, cache_dir=cache).content_hash == other.content_hash
    assert len(list(cache.glob("*.npz"))) == 1


@pytest.mark.parametrize("garbage", [b"", b"not a zip file", b"PK\x03\x04broken"])
def test_corrupt_cache_is_rebuilt(garbage, tmp_path):
    ds = synthetic_dataset()
    src = write_image_folder(tmp_path / "src", ds)
    cache = tmp_path / "cache"
    data.load(src, cache_dir=cache)
    (npz,) = cache.glob("*.npz")
    npz.write_bytes(garbage)
    assert_same_dataset(data.load(src, cache_dir=cache), ds)
    with np.load(npz) as rebuilt:  # a valid archive again
        np.testing.assert_array_equal(rebuilt["train_images"], ds.train_images)
    assert sorted(p.name for p in cache.iterdir()) == [npz.name]  # no tmp files


def test_unwritable_cache_still_loads(tmp_path):
    ds = synthetic_dataset()
    src = write_parquet_dataset(tmp_path / "src", ds)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    assert_same_dataset(data.load(src, cache_dir=blocker), ds)


# Pickles: nothing in them runs.


class _RunsCode:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("victim", ["data_batch_1", "test_batch", "batches.meta"])
@pytest.mark.parametrize("how", ["os.system", "builtins.eval"])
def test_malicious_pickle_is_refused_without_running(victim, how, tmp_path):
    folder = write_cifar_batches(tmp_path, synthetic_dataset())
    marker = tmp_path / "pwned"
    if how == "os.system":
        payload = _RunsCode(os.system, f"touch {marker}")
    else:
        payload = _RunsCode(eval, f"open({str(marker)!r}, 'w').close()")
    batch = {"batch_label": "x", "labels": [0], "data": payload}
    (folder / victim).write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(SweepError) as excinfo:
        data.load(folder)
    message = one_line_error(excinfo, str(folder / victim), "is not a CIFAR batch")
    assert "references " in message
    assert ("system" in message) if how == "os.system" else ("eval" in message)
    assert not marker.exists()


def _codecs_with(encoding: str) -> bytes:
    # _codecs.encode is allowed (protocol 2 uses it for bytes), latin-1 only.
    name = encoding.encode()
    return (
        b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX"
        + len(name).to_bytes(4, "little")
        + name
        + b"\x86R."
    )


@pytest.mark.parametrize(
    "content, fragment",
    [
        (pickle.dumps([1, 2, 3]), "holds a list"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8)}), "no labels"),
        (pickle.dumps({"labels": [0]}), "no data"),
        (
            pickle.dumps({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}),
            "expected uint8",
        ),
        (
            pickle.dumps({"data": np.zeros((2, 1024), np.uint8), "labels": [0, 1]}),
            "(2, 1024)",
        ),
        (pickle.dumps({"data": b"\0" * 3072, "labels": [0]}), "data is bytes"),
        (
            pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}),
            "2 images but 1 labels",
        ),
        (
            pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": ["cat"]}),
            "labels must be integers",
        ),
        (
            pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [7]}),
            "label 7 is out of range",
        ),
        (b"not a pickle at all", "unreadable pickle"),
        (pickle.dumps({"data": 1})[:-5], "unreadable pickle"),
        (_codecs_with("rot13"), "unreadable pickle"),
    ],
)
def test_wrong_pickle_structure_is_refused(content, fragment, tmp_path):
    folder = write_cifar_batches(tmp_path, synthetic_dataset())
    (folder / "data_batch_2").write_bytes(content)
    with pytest.raises(SweepError) as excinfo:
        data.load(folder)
    one_line_error(excinfo, str(folder / "data_batch_2"), fragment)


def test_batches_meta_without_label_names_is_refused(tmp_path):
    folder = write_cifar_batches(tmp_path, synthetic_dataset())
    (folder / "batches.meta").write_bytes(pickle.dumps({"num_vis": 3072}))
    with pytest.raises(SweepError) as excinfo:
        data.load(folder)
    one_line_error(excinfo, "batches.meta", "label_names")


# Bad sources: each a one-line SweepError naming the problem and the path.


def _parquet(path, blobs, labels, *, test_rows=1, label_type=None, column="image"):
    """A flat parquet folder whose train split holds exactly these rows."""
    path.mkdir(parents=True, exist_ok=True)
    good = encode_image(np.zeros((32, 32, 3), np.uint8))
    for split, b, y in (
        ("train", blobs, labels),
        ("test", [good] * test_rows, [0] * test_rows),
    ):
        table = pa.table({column: b, "label": pa.array(y, label_type)})
        pq.write_table(table, path / f"{split}.parquet")
    return path


def _missing(tmp):
    return tmp / "nope"


def _empty(tmp):
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _truncated(tmp):
    src = write_parquet_dataset(tmp / "src", synthetic_dataset())
    blob = (src / "train.parquet").read_bytes()
    (src / "train.parquet").write_bytes(blob[: len(blob) // 2])
    return src


def _not_images(tmp):
    return _parquet(tmp / "src", [b"hello, not an image"] * 2, [0, 1])


def _small_images(tmp):
    blob = encode_image(np.zeros((28, 28, 3), np.uint8))
    return _parquet(tmp / "src", [blob] * 2, [0, 1])


def _grayscale(tmp):
    return _parquet(tmp / "src", [encode_image(np.zeros((32, 32), np.uint8))], [0])


def _rgba(tmp):
    return _parquet(tmp / "src", [encode_image(np.zeros((32, 32, 4), np.uint8))], [0])


def _label_too_big(tmp):
    ds = synthetic_dataset(n_classes=3)
    src = write_parquet_dataset(tmp / "src", ds)
    table = pq.read_table(src / "train.parquet")
    labels = table.column("label").to_numpy().copy()
    labels[-1] = 3  # three names in the metadata
    table = table.set_column(1, "label", pa.array(labels))
    pq.write_table(table, src / "train.parquet")
    return src


def _negative_label(tmp):
    good = encode_image(np.zeros((32, 32, 3), np.uint8))
    return _parquet(tmp / "src", [good] * 2, [0, -1])


def _float_labels(tmp):
    good = encode_image(np.zeros((32, 32, 3), np.uint8))
    return _parquet(tmp / "src", [good] * 2, [0.0, 1.0], label_type=pa.float32())


def _int_image_column(tmp):
    return _parquet(tmp / "src", [1, 2], [0, 1])


def _no_label_column(tmp):
    src = write_parquet_dataset(tmp / "src", synthetic_dataset())
    table = pq.read_table(src / "train.parquet").drop_columns(["label"])
    pq.write_table(table, src / "train.parquet")
    return src


def _empty_train(tmp):
    return _parquet(tmp / "src", pa.array([], pa.binary()), [], label_type=pa.int64())


def _no_test_split(tmp):
    src = write_parquet_dataset(tmp / "src", synthetic_dataset())
    (src / "test.parquet").unlink()
    return src


def _oddly_named_parquet(tmp):
    src = write_parquet_dataset(tmp / "src", synthetic_dataset())
    return (src / "train.parquet").rename(src / "cifar.parquet")


def _folder_small_image(tmp):
    src = write_image_folder(tmp / "src", synthetic_dataset())
    victim = src / "train" / "class_1" / "00004.png"
    victim.write_bytes(encode_image(np.zeros((28, 28, 3), np.uint8)))
    return src


def _folder_grayscale_jpeg(tmp):
    src = write_image_folder(tmp / "src", synthetic_dataset())
    victim = src / "test" / "class_2" / "00005.png"
    victim.unlink()
    (victim.with_suffix(".jpg")).write_bytes(
        encode_image(np.zeros((32, 32), np.uint8), "JPEG")
    )
    return src


def _folder_unknown_test_class(tmp):
    src = write_image_folder(tmp / "src", synthetic_dataset())
    (src / "test" / "zebra").mkdir()
    return src


def _folder_empty_train_class(tmp):
    src = write_image_folder(tmp / "src", synthetic_dataset())
    for f in (src / "train" / "class_0").iterdir():
        f.unlink()
    return src


def _folder_without_test(tmp):
    src = write_image_folder(tmp / "src", synthetic_dataset())
    for f in (src / "test").rglob("*.png"):
        f.unlink()
    return src


def _batches_gap(tmp):
    folder = write_cifar_batches(tmp / "src", synthetic_dataset())
    (folder / "data_batch_3").unlink()
    return folder


@pytest.mark.parametrize(
    "make, fragments",
    [
        (_missing, ["does not exist"]),
        (_empty, ["no recognisable data"]),
        (_truncated, ["train.parquet", "not a readable parquet file"]),
        (_not_images, ["train.parquet row 0", "could not be decoded as an image"]),
        (_small_images, ["row 0 is 28x28 with 3 channel(s)", "expected 32x32"]),
        (_grayscale, ["32x32 with 1 channel(s) (mode L)", "expected 32x32"]),
        (_rgba, ["32x32 with 4 channel(s) (mode RGBA)"]),
        (_label_too_big, ["train.parquet", "label 3 is out of range for 3 classes"]),
        (_negative_label, ["train.parquet", "label -1 is out of range"]),
        (_float_labels, ["labels are float", "expected integers"]),
        (_int_image_column, ["column 'image' holds int64", "expected encoded image"]),
        (_no_label_column, ["needs an image column", "'label'"]),
        (_empty_train, ["the train split has no images"]),
        (_no_test_split, ["no test*.parquet"]),
        (_oddly_named_parquet, ["cifar.parquet", "must be named train*.parquet"]),
        (_folder_small_image, ["00004.png is 28x28", "expected 32x32"]),
        (_folder_grayscale_jpeg, ["00005.jpg is 32x32 with 1 channel(s)"]),
        (_folder_unknown_test_class, ["zebra"]),
        (_folder_empty_train_class, ["class_0 holds no .jpg/.jpeg/.png images"]),
        (_folder_without_test, ["test holds no .jpg/.jpeg/.png images"]),
        (_batches_gap, ["expected data_batch_1..N", "[1, 2, 4, 5]"]),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else "",
)
def test_bad_sources_are_one_line_errors(make, fragments, tmp_path):
    path = make(tmp_path)
    with pytest.raises(SweepError) as excinfo:
        data.load(str(path), cache_dir=tmp_path / "cache")
    one_line_error(excinfo, str(tmp_path), *fragments)


def test_sample_path_holds_both_splits():
    names = sorted(p.name for p in data.sample_path().iterdir())
    assert names == ["test.parquet", "train.parquet"]
    schema = pq.read_schema(data.sample_path() / "train.parquet")
    assert json.loads(schema.metadata[b"class_names"]) == list(data.CIFAR10_CLASSES)


# balanced_subset.


def _labels(counts, seed=0):
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(labels)


def test_balanced_subset_is_balanced_sorted_and_unique():
    labels = _labels([50] * 10)
    picked = data.balanced_subset(labels, 105, seed=3)
    assert picked.dtype == np.int64 and len(picked) == 105
    assert np.all(np.diff(picked) > 0)
    np.testing.assert_array_equal(
        np.bincount(labels[picked], minlength=10), [11] * 5 + [10] * 5
    )


def test_balanced_subset_is_deterministic_and_nested():
    labels = _labels([50] * 10)
    a = data.balanced_subset(labels, 60, seed=1)
    np.testing.assert_array_equal(a, data.balanced_subset(labels, 60, seed=1))
    assert not np.array_equal(a, data.balanced_subset(labels, 60, seed=2))
    bigger = data.balanced_subset(labels, 237, seed=1)
    assert np.all(np.isin(a, bigger))


def test_balanced_subset_can_take_everything():
    labels = _labels([7, 7, 7])
    np.testing.assert_array_equal(data.balanced_subset(labels, 21, seed=0), range(21))


@pytest.mark.parametrize(
    "counts, n, seed, fragment",
    [
        ([5, 5, 5], 16, 0, "needs 6 images of class 0, but only 5"),
        ([5, 2, 5], 9, 0, "needs 3 images of class 1, but only 2"),
        ([5, 5, 5], 2, 0, "smaller than the number of classes (3)"),
        ([5, 5, 5], 6, -1, "non-negative"),
        ([5, 5, 5], 6.0, 0, "must be an integer"),
    ],
)
def test_balanced_subset_bounds(counts, n, seed, fragment):
    with pytest.raises(SweepError) as excinfo:
        data.balanced_subset(_labels(counts), n, seed=seed)
    one_line_error(excinfo, fragment)
