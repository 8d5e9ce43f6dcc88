"""Data sets of the paper: synthetic ones generated offline from a seed, bundled digits, and
the image data sets prepared under a data directory (`image_data`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class Split:
    """Train and test tensors of one task instance."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def sparse_parity(n_bits: int, k: int, n_train: int, n_test: int, seed: int) -> Split:
    """Random ±1 bit strings labelled by the parity (product) of their first k bits."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (n_train + n_test, n_bits), generator=g).float() * 2 - 1
    y = x[:, :k].prod(dim=1)
    return Split(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def modular_addition(modulus: int, train_fraction: float, seed: int) -> Split:
    """All pairs (a, b) as tokens [a, b, =] labelled (a + b) mod p, split by a seeded shuffle."""
    a, b = torch.meshgrid(torch.arange(modulus), torch.arange(modulus), indexing="ij")
    a, b = a.reshape(-1), b.reshape(-1)
    x = torch.stack([a, b, torch.full_like(a, modulus)], dim=1)
    y = (a + b) % modulus
    return _seeded_split(x, y, train_fraction, seed)


def _seeded_split(x: torch.Tensor, y: torch.Tensor, train_fraction: float, seed: int) -> Split:
    """The first floor(fraction × n) examples of a seeded shuffle train, the rest test (as the
    released split)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    n_train = int(train_fraction * len(x))
    tr, te = perm[:n_train], perm[n_train:]
    return Split(x[tr], y[tr], x[te], y[te])


def digits(train_fraction: float, seed: int) -> Split:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 real images, no download): pixels
    scaled to [0, 1] as ToTensor does (their range is 0..16), flattened; a seeded split."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    return _seeded_split(x, y, train_fraction, seed)


@functools.cache
def _images(dataset: str, data_dir: str) -> Split:
    from latentstates.tasks import image_data

    reader = image_data.READERS[dataset]
    (x_tr, y_tr), (x_te, y_te) = reader(data_dir, "train"), reader(data_dir, "test")
    return Split(*(torch.from_numpy(np.array(a)) for a in (x_tr, y_tr, x_te, y_te)))


def images(dataset: str, data_dir: str | Path) -> Split:
    """MNIST or CIFAR-100's own train and test splits as stored (uint8 images; the model's
    `ImageInput` scales and normalises them). Read once per process: every seed of a job gets
    the same tensors, which training then shares instead of copying."""
    return _images(dataset, str(Path(data_dir).resolve()))
