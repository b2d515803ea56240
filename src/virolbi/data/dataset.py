"""Datasets of uint8 images: in-memory / memory-mapped arrays and lazily decoded files.

Every dataset yields ``(uint8 tensor (C, H, W), int label)``; models take float images in [0, 1],
so a batch goes through :func:`to_float` on the way in. :func:`make_loader` batches with
deterministic shuffling; :func:`split_per_class` carves a validation split.
"""

from __future__ import annotations

import operator
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from virolbi.checks import check_positive_int
from virolbi.errors import InputError

__all__ = ["ImageDataset", "FileImageDataset", "make_loader", "to_float", "split_per_class",
           "batch_of"]


def _as_indices(indices: Any, n: int, name: str = "indices") -> np.ndarray:
    idx = np.asarray(indices)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise InputError(f"a boolean mask for {name} must have shape ({n},), got {idx.shape}")
        return np.flatnonzero(idx)
    if idx.ndim == 0:
        idx = idx.reshape(1)
    if idx.size == 0:
        return np.zeros(0, dtype=np.int64)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise InputError(f"{name} must be a 1-D sequence of integers, got {idx.dtype} array of "
                         f"shape {idx.shape}")
    if idx.min() < -n or idx.max() >= n:
        raise InputError(f"{name} out of range for a dataset of {n} images: "
                         f"[{idx.min()}, {idx.max()}]")
    return np.where(idx < 0, idx + n, idx).astype(np.int64)


class ImageDataset(Dataset):
    """An array-backed image classification set.

    Parameters
    ----------
    data : ndarray
        ``uint8 (N, H, W, C)`` (or ``(N, H, W)``, read as one channel); may be a memory map.
    targets : array-like
        ``(N,)`` integer labels in ``[0, len(classes))``.
    classes : sequence of str, optional
        Class names; default ``"0", "1", ...`` up to the largest label.
    name : str
        Shown in ``repr`` and error messages.

    Attributes
    ----------
    data : ndarray
        ``uint8 (N, H, W, C)``.
    targets : ndarray
        ``int64 (N,)``.
    classes : list of str

    Examples
    --------
    >>> import numpy as np
    >>> ds = ImageDataset(np.zeros((4, 8, 8, 3), np.uint8), [0, 1, 1, 0], ["a", "b"])
    >>> x, y = ds[1]
    >>> tuple(x.shape), x.dtype, y
    ((3, 8, 8), torch.uint8, 1)
    >>> len(ds.subset([0, 3])), ds.subset([0, 3]).targets.tolist()
    (2, [0, 0])
    """

    def __init__(self, data: np.ndarray, targets: Sequence[int] | np.ndarray,
                 classes: Sequence[str] | None = None, *, name: str = "images") -> None:
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim not in (3, 4):
            got = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                   else type(data).__name__)
            raise InputError(f"{name}: data must be a uint8 array of shape (N, H, W, C), got {got}")
        if data.ndim == 3:
            data = data[..., None]
        self.data = data
        self.targets = _check_targets(targets, data.shape[0], classes, name)
        self.classes = _classes(classes, self.targets)
        self.name = name

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, n={len(self)}, "
                f"classes={len(self.classes)})")

    def _images(self, idx: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, C) for valid non-negative indices."""
        return np.take(self.data, idx, axis=0)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            k = operator.index(i)
        except TypeError:
            raise InputError(f"{self.name}: index must be an integer, got {i!r} (use get_batch "
                             "for several)") from None
        n = len(self)
        if not -n <= k < n:
            raise IndexError(f"{self.name}: index {k} out of range for {n} images")
        k %= n
        img = self._images(np.asarray([k]))[0]
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), int(self.targets[k])

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch: ``uint8 (B, C, H, W)`` images and ``int64 (B,)`` labels."""
        idx = _as_indices(indices, len(self))
        imgs = self._images(idx)
        x = torch.from_numpy(np.ascontiguousarray(imgs.transpose(0, 3, 1, 2)))
        return x, torch.from_numpy(self.targets[idx].copy())

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ImageDataset":
        """The images at ``indices`` (integers or a boolean mask), as a new dataset."""
        idx = _as_indices(indices, len(self))
        return ImageDataset(self._images(idx), self.targets[idx], self.classes, name=self.name)


def _check_targets(targets: Any, n: int, classes: Sequence[str] | None, name: str) -> np.ndarray:
    t = np.asarray(targets)
    if t.shape != (n,) or (n and not np.issubdtype(t.dtype, np.integer)):
        raise InputError(f"{name}: targets must be {n} integers (one per image), got {t.dtype} "
                         f"array of shape {t.shape}")
    t = t.astype(np.int64)
    if n and t.min() < 0:
        raise InputError(f"{name}: labels must be >= 0, got {t.min()}")
    if classes is not None and n and t.max() >= len(classes):
        raise InputError(f"{name}: label {t.max()} out of range for {len(classes)} classes")
    return t


def _classes(classes: Sequence[str] | None, targets: np.ndarray) -> list[str]:
    if classes is not None:
        return [str(c) for c in classes]
    return [str(k) for k in range(int(targets.max()) + 1 if targets.size else 0)]


class FileImageDataset(ImageDataset):
    """Images decoded from files on access (for large ImageFolder trees such as ImageNet).

    Parameters
    ----------
    files : sequence of path
        One image file per sample.
    targets : array-like
        ``(N,)`` integer labels.
    classes : sequence of str
    image_size : int, optional
        When given, every image is resized (shorter side to ``round(image_size * 256 / 224)``)
        and centre-cropped to ``image_size`` × ``image_size``; images of different sizes cannot be
        batched without it.
    name : str

    ``data`` is not available (nothing is held in memory): :meth:`materialize` decodes everything
    into an :class:`ImageDataset`.
    """

    def __init__(self, files: Sequence[str | os.PathLike], targets: Sequence[int] | np.ndarray,
                 classes: Sequence[str] | None = None, *, image_size: int | None = None,
                 name: str = "images") -> None:
        self.files = [Path(f) for f in files]
        self.targets = _check_targets(targets, len(self.files), classes, name)
        self.classes = _classes(classes, self.targets)
        self.image_size = _check_size(image_size)
        self.name = name

    @property  # type: ignore[override]
    def data(self) -> np.ndarray:
        raise AttributeError(f"{self.name} is decoded lazily from files and has no .data; call "
                             ".materialize() to decode it into memory")

    def _images(self, idx: np.ndarray) -> np.ndarray:
        imgs = [decode_image(self.files[k], self.image_size) for k in idx]
        shapes = {im.shape for im in imgs}
        if len(shapes) > 1:
            raise InputError(f"{self.name}: images of different sizes {sorted(shapes)} cannot be "
                             "batched; pass image_size to resize and centre-crop them")
        if not imgs:
            return np.zeros((0, 1, 1, 3), np.uint8)
        return np.stack(imgs)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "FileImageDataset":
        idx = _as_indices(indices, len(self))
        return FileImageDataset([self.files[k] for k in idx], self.targets[idx], self.classes,
                                image_size=self.image_size, name=self.name)

    def materialize(self) -> ImageDataset:
        """Decode every image into memory (all must have one size, see ``image_size``)."""
        return ImageDataset(self._images(np.arange(len(self))), self.targets, self.classes,
                            name=self.name)


def _check_size(image_size: Any) -> int | None:
    if image_size is None:
        return None
    return check_positive_int(image_size, "image_size")


def resize_center_crop(img: Any, size: int) -> Any:
    """Resize a PIL image so its shorter side is ``round(size * 256 / 224)``, then centre-crop
    ``size`` × ``size`` (the usual ImageNet evaluation transform)."""
    from PIL import Image

    short = max(size, int(round(size * 256 / 224)))
    w, h = img.size
    scale = short / min(w, h)
    nw, nh = max(size, int(round(w * scale))), max(size, int(round(h * scale)))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def decode_image(source: str | os.PathLike | bytes, image_size: int | None = None,
                 name: str | None = None) -> np.ndarray:
    """Decode an image file (or its bytes) to ``uint8 (H, W, 3)`` RGB, optionally resized and
    centre-cropped to ``image_size`` (see :func:`resize_center_crop`)."""
    import io

    from PIL import Image, UnidentifiedImageError

    label = name or (str(source) if not isinstance(source, bytes) else "image")
    try:
        stream = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
        with stream, Image.open(stream) as img:
            img = img.convert("RGB")
            if image_size is not None:
                img = resize_center_crop(img, image_size)
            return np.asarray(img, dtype=np.uint8).copy()
    except FileNotFoundError:
        raise InputError(f"image not found: {label}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot decode {label} as an image: {exc}") from None


def split_per_class(targets: Sequence[int] | np.ndarray, val_per_class: int,
                    classes: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/validation carving: the last ``val_per_class`` samples of every class
    (in dataset order) go to validation, the rest to training.

    ``classes`` (optional) only names the classes in error messages.

    Returns
    -------
    train_idx, val_idx : ndarray
        Sorted ``int64`` indices; disjoint, together all of ``range(N)``.

    Examples
    --------
    >>> tr, va = split_per_class([0, 0, 0, 1, 1, 1], 1)
    >>> tr.tolist(), va.tolist()
    ([0, 1, 3, 4], [2, 5])
    """
    t = np.asarray(targets, dtype=np.int64)
    try:
        k = operator.index(val_per_class)
    except TypeError:
        k = -1
    if k < 0:
        raise InputError(f"val_per_class must be a non-negative integer, got {val_per_class!r}")
    val: list[np.ndarray] = []
    for c in np.unique(t):
        members = np.flatnonzero(t == c)
        if k and members.size <= k:
            label = classes[c] if classes is not None and c < len(classes) else c
            raise InputError(f"class {label} has {members.size} images, too few to hold out "
                             f"val_per_class={k} and keep any for training")
        val.append(members[members.size - k:] if k else members[:0])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    mask = np.ones(t.size, bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` → float32 in [0, 1] (divide by 255); float input is returned as is.

    Examples
    --------
    >>> to_float(torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
    tensor([[[[0., 1.]]]])
    """
    if not isinstance(batch, torch.Tensor):
        raise InputError(f"to_float expects a torch tensor, got {type(batch).__name__}")
    if batch.dtype == torch.uint8:
        return batch.to(torch.float32) / 255.0
    if batch.is_floating_point():
        return batch
    raise InputError(f"to_float expects uint8 (or float) images, got {batch.dtype}")


class _Batched(Dataset):
    """Maps a list of indices to one batch (so the loader fetches arrays in one go)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        if hasattr(self.dataset, "get_batch"):
            return self.dataset.get_batch(indices)
        items = [self.dataset[i] for i in indices]
        return (torch.stack([torch.as_tensor(x) for x, _ in items]),
                torch.as_tensor([int(y) for _, y in items], dtype=torch.int64))


def make_loader(dataset: Dataset, batch_size: int = 128, shuffle: bool = False, seed: int = 0,
                num_workers: int = 0, *, drop_last: bool = False,
                collate: Callable[..., Any] | None = None) -> DataLoader:
    """A :class:`~torch.utils.data.DataLoader` of ``(uint8 (B, C, H, W), int64 (B,))`` batches.

    Shuffling draws from a ``torch.Generator`` seeded with ``seed``: the same seed gives the same
    order of batches, epoch after epoch (each pass over the loader is a new permutation).

    Examples
    --------
    >>> import numpy as np
    >>> ds = ImageDataset(np.zeros((5, 4, 4, 3), np.uint8), [0, 1, 0, 1, 0])
    >>> [tuple(x.shape) for x, y in make_loader(ds, batch_size=2)]
    [(2, 3, 4, 4), (2, 3, 4, 4), (1, 3, 4, 4)]
    """
    for value, what in ((batch_size, "batch_size"), (num_workers, "num_workers")):
        try:
            ok = operator.index(value) >= (1 if what == "batch_size" else 0)
        except TypeError:
            ok = False
        if not ok:
            raise InputError(f"{what} must be a {'positive' if what == 'batch_size' else 'non-negative'}"
                             f" integer, got {value!r}")
    if shuffle:
        sampler: Any = RandomSampler(dataset, generator=torch.Generator().manual_seed(int(seed)))
    else:
        sampler = SequentialSampler(dataset)
    batches = BatchSampler(sampler, batch_size=batch_size, drop_last=drop_last)
    return DataLoader(_Batched(dataset), batch_size=None, sampler=batches, num_workers=num_workers,
                      collate_fn=collate, persistent_workers=False)


def batch_of(dataset: Any, indices: Sequence[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(B, C, H, W)`` (the dataset's dtype) and ``int64`` labels at ``indices`` of any
    dataset: :meth:`ImageDataset.get_batch` when it has one, else its ``(image, label)`` items
    stacked. The one way every part of virolbi batches a dataset."""
    idx = np.asarray(indices)
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(idx)
    xs, ys = [], []
    for i in idx.tolist():
        img, label = dataset[int(i)]
        xs.append(img if isinstance(img, torch.Tensor) else torch.as_tensor(np.asarray(img)))
        ys.append(int(label))
    try:
        x = torch.stack(xs)
    except RuntimeError as exc:
        raise InputError(f"dataset images differ in shape, cannot batch them: {exc}") from None
    return x, torch.tensor(ys, dtype=torch.long)
