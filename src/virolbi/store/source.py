"""What a store was smoothed from: the source's identity, and the images of one shard.

A source is anything :func:`virolbi.data.load_dataset` returns (an array-backed
:class:`~virolbi.data.ImageDataset`, or a :class:`~virolbi.data.FileImageDataset` decoded from files
on access) or a bare ``uint8 (N, H, W, C)`` array.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from virolbi.data.dataset import batch_of
from virolbi.errors import InputError

__all__ = ["dataset_fingerprint", "source_identity", "source_summary", "shard_images",
           "shard_part", "as_source"]


def dataset_fingerprint(images: np.ndarray, chunk: int = 1024) -> str:
    """SHA-256 of a ``uint8 (N, H, W, C)`` array's shape and pixels (read in chunks of images).

    Examples
    --------
    >>> a = np.zeros((2, 4, 4, 3), np.uint8)
    >>> dataset_fingerprint(a) == dataset_fingerprint(a.copy()), dataset_fingerprint(a) == dataset_fingerprint(a + 1)
    (True, False)
    """
    h = hashlib.sha256(repr((images.shape, str(images.dtype))).encode())
    for start in range(0, images.shape[0], chunk):
        h.update(np.ascontiguousarray(images[start:start + chunk]).tobytes())
    return h.hexdigest()


def _files_fingerprint(dataset: Any) -> str:
    """SHA-256 of a file-backed dataset's file names (relative to their common folder), sizes,
    labels and resize setting: its pixels without decoding them."""
    import os

    files = [str(f) for f in dataset.files]
    root = os.path.commonpath(files) if len(files) > 1 else os.path.dirname(files[0])
    h = hashlib.sha256(repr(("files", dataset.image_size)).encode())
    for f, t in zip(files, dataset.targets.tolist()):
        h.update(f"{os.path.relpath(f, root)}\0{os.path.getsize(f)}\0{t}\n".encode())
    return h.hexdigest()


def as_source(source: Any) -> Any:
    """``source`` checked: a dataset with images, or a ``uint8 (N, H, W, C)`` array."""
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim != 4:
            raise InputError(f"expected uint8 images (N, H, W, C), got {source.dtype} array of "
                             f"shape {source.shape}")
    elif not hasattr(source, "targets"):
        raise InputError(f"expected a dataset or a uint8 array, got {type(source).__name__}")
    if len(source) == 0:
        raise InputError("the source has no images")
    return source


def source_identity(source: Any) -> str:
    """The identity a store records: :func:`dataset_fingerprint` of the pixels for an array or an
    array-backed dataset (the smoothed cache's identity too), a fingerprint of the files for a
    file-backed one."""
    if isinstance(source, np.ndarray):
        return dataset_fingerprint(source)
    if hasattr(source, "files"):
        return _files_fingerprint(source)
    return dataset_fingerprint(np.asarray(source.data))


def source_summary(source: Any, identity: str | None = None,
                   description: str = "") -> dict[str, Any]:
    """The manifest's ``source`` record: identity, number of images, image shape, description."""
    first = shard_images(source, 0, 1)
    return {"identity": identity or source_identity(source), "n_images": len(source),
            "image_shape": [int(first.shape[2]), int(first.shape[3]), int(first.shape[1])],
            "description": description}


def shard_images(source: Any, start: int, stop: int) -> Any:
    """Images ``start:stop`` of ``source`` as ``uint8 (B, C, H, W)`` NumPy."""
    if isinstance(source, np.ndarray):
        return np.ascontiguousarray(source[start:stop].transpose(0, 3, 1, 2))
    x = batch_of(source, np.arange(start, stop))[0]
    if x.dtype != torch.uint8:
        raise InputError(f"the source's images are {x.dtype}, expected uint8")
    return x.numpy()


def shard_part(source: Any, start: int, stop: int) -> Any:
    """Images ``start:stop`` of ``source`` in a form that travels cheaply to a worker process: a
    view of the pixels (array or array-backed dataset), or the files' subset (file-backed; the
    worker decodes them, so the driver never decodes the whole source)."""
    if isinstance(source, np.ndarray):
        return source[start:stop]
    if hasattr(source, "files"):
        return source.subset(np.arange(start, stop))
    data = getattr(source, "data", None)
    if isinstance(data, np.ndarray):
        return data[start:stop]
    return source.subset(np.arange(start, stop))
