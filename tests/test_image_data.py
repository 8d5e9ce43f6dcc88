"""MNIST and CIFAR-100 readers on small files in each data set's own on-disk format."""

import pickle
import struct

import numpy as np
import pytest

from latentstates.tasks import image_data


def _write_idx(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root, n_train=6, n_test=4, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        img_name, lab_name = image_data.MNIST_FILES[split]
        _write_idx(image_data.mnist_dir(root) / img_name, images)
        _write_idx(image_data.mnist_dir(root) / lab_name, labels)
        out[split] = (images, labels)
    return out


def write_cifar100(root, n_train=5, n_test=3, seed=0):
    rng = np.random.default_rng(seed)
    d = image_data.cifar100_dir(root)
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        entry = {
            "filenames": [f"{i}.png" for i in range(n)],
            "fine_labels": fine,
            "coarse_labels": [f // 5 for f in fine],
            "data": data,
        }
        with (d / split).open("wb") as f:
            pickle.dump(entry, f)
        out[split] = (data, np.array(fine))
    (d / "meta").write_bytes(pickle.dumps({"fine_label_names": [str(i) for i in range(100)]}))
    return out


def test_mnist_reads_its_idx_files(tmp_path):
    written = write_mnist(tmp_path)
    for split in ("train", "test"):
        x, y = image_data.mnist(tmp_path, split)
        np.testing.assert_array_equal(x, written[split][0])
        np.testing.assert_array_equal(y, written[split][1])
    victim = image_data.mnist_dir(tmp_path) / "t10k-images-idx3-ubyte"
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte: truncated IDX file"):
        image_data.mnist(tmp_path, "test")


def test_cifar100_reads_its_pickles_as_images(tmp_path):
    written = write_cifar100(tmp_path)
    x, y = image_data.cifar100(tmp_path, "train")
    assert x.shape == (5, 32, 32, 3) and x.dtype == np.uint8
    # Channel-major rows, as the data set stores them: red plane first.
    np.testing.assert_array_equal(x[0, :, :, 0].reshape(-1), written["train"][0][0, :1024])
    np.testing.assert_array_equal(y, written["train"][1])


def test_missing_data_names_the_directory_and_files(tmp_path):
    with pytest.raises(image_data.MissingDataError, match=str(tmp_path / "MNIST" / "raw")) as err:
        image_data.mnist(tmp_path, "train")
    assert "train-images-idx3-ubyte" in str(err.value) and "prepare_mnist" in str(err.value)
    with pytest.raises(image_data.MissingDataError, match="cifar-100-python: cifar100 is not prepared"):
        image_data.cifar100(tmp_path, "test")


def test_readers_equal_torchvision_where_it_imports(tmp_path):
    tv = pytest.importorskip("torchvision.datasets", reason="torchvision does not import beside this torch")
    write_mnist(tmp_path)
    write_cifar100(tmp_path)
    ours = image_data.mnist(tmp_path, "train")
    theirs = tv.MNIST(str(tmp_path), train=True, download=False)
    np.testing.assert_array_equal(ours[0], theirs.data.numpy())
    np.testing.assert_array_equal(ours[1], theirs.targets.numpy())
    ours = image_data.cifar100(tmp_path, "test")

    class Unchecked(tv.CIFAR100):  # our files are not the released ones: skip the MD5 checks
        meta = {**tv.CIFAR100.meta, "md5": None}

        def _check_integrity(self):
            return True

    theirs = Unchecked(str(tmp_path), train=False, download=False)
    np.testing.assert_array_equal(ours[0], theirs.data)
    np.testing.assert_array_equal(ours[1], np.array(theirs.targets))
