"""Uniform batched access to the dataset forms :func:`virolbi.evaluate.evaluate` accepts:
``(images, labels)`` tensors, an object with ``uint8`` ``.data`` and ``.targets``, or any dataset
of ``(image, label)`` items; images come out as float batches in [0, 1]."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from virolbi.data.dataset import batch_of
from virolbi.errors import InputError

__all__ = ["EvalData"]


def _as_float_batch(images: Tensor) -> Tensor:
    if images.dtype == torch.uint8:
        return images.to(torch.float32) / 255.0
    if not images.is_floating_point():
        raise InputError(f"dataset images must be uint8 or float in [0, 1], got dtype {images.dtype}")
    return images


class EvalData:
    """Uniform batched access to the supported dataset forms (see :func:`evaluate`)."""

    def __init__(self, dataset: Any) -> None:
        self.arrays: tuple[Any, Any] | None = None
        if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
            images, labels = dataset
            images = torch.as_tensor(images)
            labels = torch.as_tensor(np.asarray(labels)).long()
            if images.ndim != 4 or labels.shape != (images.shape[0],):
                raise InputError("dataset given as (images, labels) must hold images (N, C, H, W) and "
                                 f"labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}")
            self.arrays, self.kind = (images, labels), "tensors"
        elif (isinstance(getattr(dataset, "data", None), np.ndarray) and dataset.data.ndim == 4
              and dataset.data.dtype == np.uint8 and hasattr(dataset, "targets")):
            images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2)
            labels = torch.as_tensor(np.asarray(dataset.targets)).long()
            self.arrays, self.kind = (images, labels), "arrays"
        elif hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
            self.dataset, self.kind = dataset, "items"
        else:
            raise InputError("dataset must be a torch Dataset of (image, label), an object with "
                             "uint8 .data (N, H, W, C) and .targets, or a pair (images, labels); got "
                             f"{type(dataset).__name__}")
        self.length = len(self.arrays[1]) if self.arrays is not None else len(dataset)
        if self.length == 0:
            raise InputError("dataset is empty")

    def labels(self) -> np.ndarray | None:
        """All labels when they are known without reading the images, else ``None``."""
        if self.arrays is not None:
            return self.arrays[1].numpy()
        targets = getattr(self.dataset, "targets", None)
        return np.asarray(targets) if targets is not None and len(targets) == self.length else None

    def batch(self, indices: np.ndarray) -> tuple[Tensor, Tensor]:
        if self.arrays is not None:
            idx = torch.from_numpy(indices)
            return _as_float_batch(self.arrays[0][idx]), self.arrays[1][idx]
        x, y = batch_of(self.dataset, indices)
        if x.ndim != 4:
            raise InputError(f"dataset items must be images (C, H, W), got shape {tuple(x.shape[1:])}")
        return _as_float_batch(x), y.long()
