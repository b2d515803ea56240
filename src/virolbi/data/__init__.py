"""Datasets for training and evaluation: CIFAR-10/100, ImageFolder trees, ImageNet100,
Tiny-ImageNet-100, CIFAR-C.

Everything yields ``uint8`` images ``(C, H, W)`` with integer labels (normalisation lives inside
the models; convert batches with :func:`to_float`). Entry point: :func:`load_dataset`.

=====================  ==================================================================
name                    source
=====================  ==================================================================
``"cifar10"``           official python-pickle release under ``data_dir`` (downloadable)
``"cifar100"``          same, fine labels (100 classes)
``"cifar100-coarse"``   same, coarse labels (20 superclasses)
``"cifar10-jpeg"``      the shared JPEG copy ``train.tar.gz`` (train 4000 + val 1000 / class)
``"imagenet100"``       ImageNet ImageFolder tree + a 100-class list file
``"tinyimagenet100"``   Tiny-ImageNet-100 (64 px): the shared ``train.tar.gz`` (train 450 + val 50
                        / class) or the official Tiny ImageNet zip (downloadable; + test 50 / class)
a path                  any ImageFolder directory, or a ``.tar`` / ``.tar.gz`` of one
=====================  ==================================================================
"""

from __future__ import annotations

import operator
import os
from pathlib import Path

import numpy as np

from virolbi.data._pickle import safe_unpickle
from virolbi.data.cache import cache_dir, load_arrays, save_arrays
from virolbi.data.cifar import (CIFAR10_CLASSES, CIFAR100_CLASSES, CIFAR100_COARSE_CLASSES,
                                CIFAR_RELEASES, download_cifar, load_cifar)
from virolbi.data.cifar_c import list_cifar_c, load_cifar_c
from virolbi.data.dataset import (FileImageDataset, ImageDataset, decode_image, make_loader,
                                  resize_center_crop, split_per_class, to_float)
from virolbi.data.download import download_url, file_md5
from virolbi.data.folder import load_image_folder, load_imagenet100, read_class_list
from virolbi.data.tinyimagenet import (SHARED_TINYIMAGENET100, TINYIMAGENET100_CLASSES,
                                       load_tinyimagenet100)
from virolbi.errors import InputError

__all__ = [
    "CIFAR10_CLASSES", "CIFAR100_CLASSES", "CIFAR100_COARSE_CLASSES", "CIFAR_RELEASES", "DATASETS",
    "FileImageDataset", "ImageDataset", "SHARED_CIFAR10_JPEG", "SHARED_TINYIMAGENET100",
    "TINYIMAGENET100_CLASSES", "cache_dir", "decode_image", "download_cifar",
    "download_url", "file_md5", "list_cifar_c", "load_arrays", "load_cifar", "load_cifar_c",
    "load_dataset", "load_image_folder", "load_imagenet100", "load_tinyimagenet100", "make_loader",
    "read_class_list",
    "resize_center_crop", "safe_unpickle", "save_arrays", "split_per_class", "to_float",
]

DATASETS = ("cifar10", "cifar100", "cifar100-coarse", "cifar10-jpeg", "imagenet100",
            "tinyimagenet100")
#: Dataset names read from a CIFAR release: name -> (release, labels).
_CIFAR_NAMES = {"cifar10": ("cifar10", "fine"), "cifar100": ("cifar100", "fine"),
                "cifar100-coarse": ("cifar100", "coarse")}
#: The shared CIFAR-10 JPEG copy, ``../shared/data/cifar10-jpeg/train.tar.gz`` from the repository.
SHARED_CIFAR10_JPEG = (Path(__file__).resolve().parents[3].parent / "shared" / "data"
                       / "cifar10-jpeg" / "train.tar.gz")
CIFAR10_JPEG_VAL_PER_CLASS = 1000


def _first_per_class(ds: ImageDataset, m: int | None) -> ImageDataset:
    if m is None:
        return ds
    keep = np.zeros(len(ds), bool)
    for c in np.unique(ds.targets):
        keep[np.flatnonzero(ds.targets == c)[:m]] = True
    return ds.subset(keep)


def _count(value: object, name: str) -> int | None:
    if value is None:
        return None
    try:
        v = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        v = 0
    if v < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return v


def load_dataset(name_or_path: str | os.PathLike, split: str = "train", *,
                 data_dir: str | os.PathLike | None = None, download: bool = False,
                 val_per_class: int | None = None, image_size: int | None = None,
                 max_per_class: int | None = None, class_list: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None,
                 progress: bool | None = None) -> ImageDataset:
    """Load a dataset split by name or path.

    Splits: ``"test"`` is the official test set where one exists (CIFAR, a tree's ``test/``).
    ``"val"`` is a tree's native ``val/``, or is carved from the training images when
    ``val_per_class`` is given: the last ``val_per_class`` images of every class (file order for
    the CIFAR batches, file name for folders), with ``"train"`` the rest — so the two never
    overlap. The shared CIFAR-10 JPEG copy has no test set and carves 1000 per class by default
    (train = the first 4000 of each class); Tiny-ImageNet-100 carves 50 per class by default
    (train = the first 450 of each class, val = the last 50, in file-name order), and has a test
    split (the official validation images) only from the official archive.

    Parameters
    ----------
    name_or_path : str or path
        A name of :data:`DATASETS` (``"cifar10"``, ``"cifar100"``, ``"cifar100-coarse"``,
        ``"cifar10-jpeg"``, ``"imagenet100"``, ``"tinyimagenet100"``), or the path of an ImageFolder
        directory or tar archive.
    split : {"train", "val", "test"}
    data_dir : path, optional
        Where the data are: CIFAR — the directory holding the release (default
        ``<cache>/datasets``); cifar10-jpeg — the directory holding ``train.tar.gz`` or the archive
        (default :data:`SHARED_CIFAR10_JPEG`); imagenet100 — the ImageNet root (required);
        tinyimagenet100 — the shared ``train.tar.gz`` or its folder (default
        :data:`SHARED_TINYIMAGENET100`), or the official ``tiny-imagenet-200.zip`` or its folder.
    download : bool, default False
        CIFAR and tinyimagenet100: fetch the official archive (MD5-checked) when it is missing.
    val_per_class : int, optional
        Carve a validation split of this many images per class from the training images.
    image_size : int, optional
        Resize and centre-crop folder images (default 224 for imagenet100).
    max_per_class : int, optional
        Keep only the first images of every class before carving (quick runs and tests).
    class_list : path, optional
        imagenet100: the file of 100 wnids.
    cache_dir : path, optional
        Cache for decoded archives (default ``$VIROLBI_CACHE`` or ``~/.cache/virolbi``).
    progress : bool or None
        Progress bar while decoding (``None``: only on a terminal).

    Returns
    -------
    ImageDataset

    Examples
    --------
    >>> load_dataset("cifar10", "val", data_dir="/nonexistent")
    Traceback (most recent call last):
    ...
    virolbi.errors.InputError: cifar10 has no validation split: pass val_per_class (e.g. 1000) to carve one from the training set, or use split='test'
    """
    if split not in ("train", "val", "test"):
        raise InputError(f"split must be 'train', 'val' or 'test', got {split!r}")
    val_per_class = _count(val_per_class, "val_per_class")
    max_per_class = _count(max_per_class, "max_per_class")
    name = str(name_or_path)
    key = name.lower()
    if key in _CIFAR_NAMES:
        return _load_cifar_split(key, split, data_dir, download, val_per_class, max_per_class,
                                 cache_dir)
    opts = dict(image_size=image_size, max_per_class=max_per_class, cache_dir=cache_dir,
                progress=progress)
    if key == "cifar10-jpeg":
        return _load_cifar10_jpeg(split, data_dir, val_per_class, opts)
    if key == "tinyimagenet100":
        return load_tinyimagenet100(split, data_dir, download=download,
                                    val_per_class=val_per_class, **opts)
    if key == "imagenet100":
        if data_dir is None:
            raise InputError("imagenet100 needs data_dir: the ImageNet root holding train/ and "
                             "val/ class folders")
        opts["image_size"] = 224 if image_size is None else image_size
        return load_imagenet100(data_dir, split, class_list=class_list,
                                val_per_class=val_per_class, **opts)
    path = Path(name).expanduser()
    if not path.exists():
        raise InputError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)} or "
                         "the path of an ImageFolder directory or .tar/.tar.gz archive")
    if path.is_file() and not str(path).lower().endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2",
                                                          ".tar.xz")):
        raise InputError(f"{path} is a file but not a tar archive (.tar, .tar.gz)")
    return load_image_folder(path, split, val_per_class=val_per_class, **opts)


def _load_cifar_split(key: str, split: str, data_dir: str | os.PathLike | None, download: bool,
                      val_per_class: int | None, max_per_class: int | None,
                      cache: str | os.PathLike | None) -> ImageDataset:
    """A split of a CIFAR release (``key`` in :data:`_CIFAR_NAMES`), carving "val" if asked."""
    if split == "val" and val_per_class is None:
        raise InputError(f"{key} has no validation split: pass val_per_class (e.g. 1000) to "
                         "carve one from the training set, or use split='test'")
    release, labels = _CIFAR_NAMES[key]
    root = data_dir if data_dir is not None else cache_dir(cache) / "datasets"
    ds = load_cifar(release, "test" if split == "test" else "train", root, download=download,
                    labels=labels)
    ds = _first_per_class(ds, max_per_class)
    if split != "test" and val_per_class is not None:
        tr, va = split_per_class(ds.targets, val_per_class, ds.classes)
        ds = ds.subset(tr if split == "train" else va)
        ds.name = f"{key}-{split}"
    return ds


def _load_cifar10_jpeg(split: str, data_dir: str | os.PathLike | None, val_per_class: int | None,
                       opts: dict) -> ImageDataset:
    """A split of the shared CIFAR-10 JPEG copy (no test split; val carved, 1000 per class)."""
    if split == "test":
        raise InputError("cifar10-jpeg (the shared JPEG copy) has no test split; use "
                         "split='val' (the last images of every class) and say so")
    path = Path(data_dir).expanduser() if data_dir is not None else SHARED_CIFAR10_JPEG
    if path.is_dir():
        path = path / "train.tar.gz"
    if not path.is_file():
        raise InputError(f"cifar10-jpeg archive not found: {path} (pass data_dir)")
    ds = load_image_folder(path, split, val_per_class=val_per_class or
                           CIFAR10_JPEG_VAL_PER_CLASS, **opts)
    ds.name = f"cifar10-jpeg-{split}"
    return ds
