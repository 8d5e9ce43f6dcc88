"""MNIST and CIFAR-100 from the files torchvision's dataset classes download, read without
torchvision (whose PyPI build needs torch's CUDA build); `prepare.download` fetches them.

Layout under a data directory (what `torchvision.datasets.MNIST(root)` and `CIFAR100(root)` write):

    MNIST/raw/train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
              t10k-labels-idx1-ubyte                       (IDX files)
    cifar-100-python/train, test                           (pickles: b"data", b"fine_labels")

Missing files stop with one message naming the directory and the files expected there; nothing
is ever generated in their place.
"""

from __future__ import annotations

import math
import pickle
import struct
from pathlib import Path

import numpy as np

from latentstates.validation import InputError

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR100_FILES = ("train", "test")
# Per-channel mean and std of CIFAR-100's training images, as the released training script.
CIFAR100_STATS = ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
# The data set each image task kind reads (its `prepare_<dataset>` rule writes it).
KIND_DATASETS = {"mnist_mlp": "mnist", "cifar100_resnet18": "cifar100"}


class MissingDataError(FileNotFoundError):
    """A data set is not in its directory; the message names the directory and the files."""


def mnist_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "MNIST" / "raw"


def cifar100_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "cifar-100-python"


# Per data set: where its files are under a data directory, their names, and torchvision's class.
_LAYOUT = {
    "mnist": (mnist_dir, [f for pair in MNIST_FILES.values() for f in pair], "MNIST"),
    "cifar100": (cifar100_dir, list(CIFAR100_FILES), "CIFAR100"),
}


def torchvision_class(dataset: str) -> str:
    """The name of the torchvision data set class that downloads `dataset`."""
    return _layout(dataset)[2]


def _layout(dataset: str):
    try:
        return _LAYOUT[dataset]
    except KeyError:
        raise ValueError(f"unknown image data set {dataset!r} ({', '.join(_LAYOUT)})") from None


def expected_files(dataset: str, data_dir: str | Path) -> list[Path]:
    """The files `dataset` ("mnist" or "cifar100") is read from under `data_dir`."""
    directory, names, _ = _layout(dataset)
    return [directory(data_dir) / f for f in names]


def missing_files(dataset: str, data_dir: str | Path) -> list[Path]:
    """The files of `dataset` absent from `data_dir`."""
    return [p for p in expected_files(dataset, data_dir) if not p.is_file()]


def require(dataset: str, data_dir: str | Path, reason: str = "") -> None:
    """Stop with one message if `dataset` is not complete in `data_dir`."""
    missing = missing_files(dataset, data_dir)
    if missing:
        where = missing[0].parent
        because = f" ({reason})" if reason else ""
        raise MissingDataError(
            f"{where}: {dataset} is not prepared here{because}; expected files "
            f"{[p.name for p in missing]}. Run the workflow's prepare_{dataset} rule on a machine "
            f"with internet access and torchvision (it downloads through torchvision's "
            f"{torchvision_class(dataset)} class), or copy the files there."
        )


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """An IDX file (MNIST's format): big-endian magic with the type and rank, then the sizes;
    `ndim`, where given, is the rank the file must have."""
    path = Path(path)
    raw = path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise InputError(path, "not an IDX file of unsigned bytes")
    rank = raw[3]
    if ndim is not None and rank != ndim:
        raise InputError(path, f"an IDX file of rank {rank}, where rank {ndim} is expected")
    if len(raw) < 4 + 4 * rank:
        raise InputError(path, f"truncated IDX header ({len(raw)} bytes for rank {rank})")
    shape = struct.unpack(f">{rank}I", raw[4 : 4 + 4 * rank])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank)
    if data.size != math.prod(shape):
        raise InputError(path, f"truncated IDX file ({data.size} of {math.prod(shape)} values)")
    return data.reshape(shape)


def mnist(data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) int64) of MNIST's `train` or `test` split."""
    require("mnist", data_dir)
    image_file, label_file = (mnist_dir(data_dir) / f for f in MNIST_FILES[split])
    images, labels = read_idx(image_file, ndim=3), read_idx(label_file, ndim=1)
    if images.shape[1:] != (28, 28):
        raise InputError(image_file, f"images of {images.shape[1]}x{images.shape[2]} pixels, not 28x28")
    _check_labels(labels, len(images), 10, label_file)
    return images, labels.astype(np.int64)


def _check_labels(labels: np.ndarray, n_images: int, classes: int, path: Path) -> None:
    if len(labels) != n_images:
        raise InputError(path, f"{len(labels)} labels for {n_images} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        bad = int(np.flatnonzero((labels < 0) | (labels >= classes))[0])
        raise InputError(path, f"label {labels[bad]} of image {bad} is not a class 0 to {classes - 1}")


class _ArraysOnly(pickle.Unpickler):
    """An unpickler of plain data: dicts, lists, strings, bytes, numbers and numpy arrays. Any
    other object the file asks for is refused before it is made, so a crafted file cannot run
    code (pickle's opcodes call only what `find_class` returns)."""

    ALLOWED = {
        ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3 (as torch allows)
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a data batch never holds")
        return super().find_class(module, name)


def cifar100(data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 32, 32, 3) uint8, fine labels (N,) int64) of CIFAR-100's `train` or `test`."""
    require("cifar100", data_dir)
    path = cifar100_dir(data_dir) / split
    try:
        with path.open("rb") as f:  # the data set's own pickle: plain data only (`_ArraysOnly`)
            entry = _ArraysOnly(f, encoding="latin1").load()
    except Exception as exc:  # truncated, foreign, or hostile file
        raise InputError(path, f"not a readable CIFAR-100 batch ({exc})") from exc
    if not isinstance(entry, dict) or not {"data", "fine_labels"} <= set(entry):
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise InputError(
            path, f"a CIFAR-100 batch is a mapping with 'data' and 'fine_labels', this one has {keys}"
        )
    data = np.asarray(entry["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise InputError(
            path, f"'data' must be N x 3072 bytes (32x32 RGB), is {data.dtype} {list(data.shape)}"
        )
    try:
        labels = np.asarray(entry["fine_labels"], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(path, f"'fine_labels' are not integers ({exc})") from exc
    _check_labels(labels, len(data), 100, path)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


# The reader of each data set: (images, labels) of its `train` or `test` split.
READERS = {"mnist": mnist, "cifar100": cifar100}
