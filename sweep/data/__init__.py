"""Turn any CIFAR-style source into uint8 arrays, labels, class names and a hash.

Sources (see `load`): the embedded sample, parquet folders (flat or dataset-hub
exports), the canonical `cifar-10-batches-py` pickles, `train/<class>/*.png`
image folders, and the real download (tfds, else the canonical tarball).
Nothing downstream knows which one was read: the same pixels and labels in the
same order give the same `Dataset.content_hash` whichever loader read them.

One module per format (`sample`, `parquet`, `cifar_batches`, `image_folder`,
`download`); `registry` picks the reader for a spec; `cache` keeps decoded
arrays; `hashing` computes the content hash (and every other hash);
`classes` resolves a class name; `subset` draws balanced subsets.

Loading never executes code from the data: pickles go through an unpickler that
only resolves numpy's array-reconstruction globals, and Pillow only gets to try
its raster decoders (no EPS, which would run Ghostscript).
"""

from sweep.data.cache import cache_root
from sweep.data.classes import resolve_class
from sweep.data.dataset import (
    CIFAR10_CLASSES,
    IMAGE_SHAPE,
    Dataset,
    dataset_from_arrays,
)
from sweep.data.download import CIFAR_MD5, CIFAR_URL
from sweep.data.hashing import array_hash, content_hash, index_hash
from sweep.data.registry import load
from sweep.data.sample import sample_path
from sweep.data.subset import balanced_subset

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR_MD5",
    "CIFAR_URL",
    "IMAGE_SHAPE",
    "Dataset",
    "array_hash",
    "balanced_subset",
    "cache_root",
    "content_hash",
    "dataset_from_arrays",
    "index_hash",
    "load",
    "resolve_class",
    "sample_path",
]
