"""Fetching the image data sets through torchvision (rule prepare_<dataset>): the only module
that imports torchvision, so that training and metrics never need it."""

from __future__ import annotations

from pathlib import Path

from latentstates.tasks.image_data import missing_files, require, torchvision_class


def download(dataset: str, data_dir: str | Path) -> None:
    """Fetch `dataset` into `data_dir` through torchvision's data set classes (which also check
    the archives' MD5 sums). Offline, or without torchvision, stop with the message of
    `require`: nothing is ever generated in place of the data."""
    if not missing_files(dataset, data_dir):
        return
    try:
        from torchvision import datasets
    except Exception as exc:  # not installed, or a build that does not import beside this torch
        reason = f"torchvision does not import here ({type(exc).__name__}: {exc})"
    else:
        cls = getattr(datasets, torchvision_class(dataset))
        try:
            for train in (True, False):
                cls(str(data_dir), train=train, download=True)
            reason = "torchvision's download left files missing"
        except Exception as exc:  # offline: URLError, timeouts, a failed checksum
            reason = f"the download failed ({type(exc).__name__}: {exc})"
    if missing_files(dataset, data_dir):
        require(dataset, data_dir, reason)
