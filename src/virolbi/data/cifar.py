"""CIFAR-10 and CIFAR-100 from the official python-pickle release (the files torchvision downloads).

Layout (Krizhevsky 2009): ``cifar-10-python.tar.gz`` unpacks to ``cifar-10-batches-py/`` with
``data_batch_1`` … ``data_batch_5``, ``test_batch`` and ``batches.meta``; ``cifar-100-python.tar.gz``
to ``cifar-100-python/`` with ``train``, ``test`` and ``meta``, each batch with 100 fine labels and
20 coarse ones (superclasses; ``labels="coarse"``, or the dataset name ``"cifar100-coarse"``). Each batch is
a pickled ``dict`` whose ``data`` is ``uint8 (N, 3072)``: the red, green and blue 32×32 planes of
each image in row-major order. The batches are read with a restricted unpickler
(:func:`virolbi.data._pickle.safe_unpickle`), never :func:`pickle.load`.

Reference: A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009.
"""

from __future__ import annotations

import dataclasses
import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from virolbi.data._pickle import safe_unpickle
from virolbi.data.dataset import ImageDataset
from virolbi.data.download import download_url
from virolbi.errors import InputError
from virolbi.io import atomic_path

__all__ = ["CIFAR10_CLASSES", "CIFAR100_CLASSES", "CIFAR100_COARSE_CLASSES", "CIFAR_RELEASES",
           "load_cifar", "download_cifar"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup",
    "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house",
    "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man",
    "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid",
    "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy",
    "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal",
    "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar",
    "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm")
#: CIFAR-100's 20 superclasses (``coarse_label_names`` of its meta file).
CIFAR100_COARSE_CLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2")


@dataclass(frozen=True)
class CifarRelease:
    """Where one CIFAR release lives and how its batches are keyed."""

    url: str
    md5: str
    archive: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str
    num_classes: int
    coarse: tuple[str, str, int] | None = None  # (label key, names key, classes) of the superclasses


CIFAR_RELEASES = {
    "cifar10": CifarRelease(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
        "cifar-10-python.tar.gz", "cifar-10-batches-py",
        tuple(f"data_batch_{k}" for k in range(1, 6)), ("test_batch",), "batches.meta", "labels",
        "label_names", 10),
    "cifar100": CifarRelease(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python.tar.gz", "cifar-100-python",
        ("train",), ("test",), "meta", "fine_labels", "fine_label_names", 100,
        ("coarse_labels", "coarse_label_names", 20)),
}

#: The label kinds of :func:`load_cifar`.
LABELS = ("fine", "coarse")


def _release(name: str) -> CifarRelease:
    try:
        return CIFAR_RELEASES[name]
    except KeyError:
        raise InputError(f"unknown CIFAR release {name!r}; expected one of "
                         f"{sorted(CIFAR_RELEASES)}") from None


class _Source:
    """Reads release files from the unpacked folder or straight from the ``.tar.gz``."""

    def __init__(self, path: Path, release: CifarRelease) -> None:
        self.path, self.release = path, release
        self._tar: tarfile.TarFile | None = None

    def read(self, fname: str) -> tuple[bytes, str]:
        r = self.release
        if self.path.is_dir():
            p = self.path / fname
            if not p.is_file():
                raise InputError(f"{self.path} is not the official {r.folder} release: {fname} "
                                 "is missing")
            return p.read_bytes(), str(p)
        member = f"{r.folder}/{fname}"
        try:
            if self._tar is None:
                self._tar = tarfile.open(self.path, "r:*")
            fh = self._tar.extractfile(member)
            if fh is None:
                raise KeyError(member)
            return fh.read(), f"{self.path}:{member}"
        except KeyError:
            raise InputError(f"{self.path} is not the official {r.archive} archive: member "
                             f"{member} is missing") from None
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise InputError(f"cannot read {self.path} as a tar archive (corrupt or truncated?): "
                             f"{exc}") from None

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()


def _labelled(r: CifarRelease, name: str, labels: str) -> CifarRelease:
    """The release read with its ``labels`` ("fine": the usual ones; "coarse": CIFAR-100's 20)."""
    if labels not in LABELS:
        raise InputError(f"labels must be 'fine' or 'coarse', got {labels!r}")
    if labels == "fine":
        return r
    if r.coarse is None:
        raise InputError(f"{name} has no coarse labels (only cifar100 has: 20 superclasses)")
    key, names_key, n = r.coarse
    return dataclasses.replace(r, label_key=key, names_key=names_key, num_classes=n)


def _locate(name: str, data_dir: str | os.PathLike | None, download: bool) -> Path:
    r = _release(name)
    if data_dir is None:
        raise InputError(f"{name}: pass data_dir (the directory holding {r.folder}/ or "
                         f"{r.archive})")
    root = Path(data_dir).expanduser()
    if root.is_file():
        return root
    if root.name == r.folder and root.is_dir():
        return root
    for cand in (root / r.folder, root / r.archive):
        if cand.exists():
            return cand
    if download:
        return download_cifar(name, root)
    raise InputError(f"{name} not found under {root}: expected {root / r.folder}/ or "
                     f"{root / r.archive} (pass download=True to fetch {r.url})")


def download_cifar(name: str, data_dir: str | os.PathLike, *, opener=None) -> Path:
    """Download the official archive into ``data_dir`` (MD5-checked, resumable, atomic) and unpack
    the release files into ``data_dir/<folder>/``; returns that folder."""
    r = _release(name)
    root = Path(data_dir).expanduser()
    archive = download_url(r.url, root / r.archive, r.md5, opener=opener)
    src = _Source(archive, r)
    try:
        for fname in (*r.train, *r.test, r.meta):  # only the known files: no path tricks
            data, _ = src.read(fname)
            with atomic_path(root / r.folder / fname) as tmp:
                tmp.write_bytes(data)
    finally:
        src.close()
    return root / r.folder


def _parse_batch(obj: object, source: str, r: CifarRelease) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(obj, dict):
        raise InputError(f"{source}: expected a pickled dict, got {type(obj).__name__}")
    obj = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "data" not in obj or r.label_key not in obj:
        raise InputError(f"{source}: missing keys; expected 'data' and {r.label_key!r}, got "
                         f"{sorted(map(str, obj))}")
    data, labels = obj["data"], np.asarray(obj[r.label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise InputError(f"{source}: 'data' must be a uint8 array of shape (N, 3072), got {got}")
    n = data.shape[0]
    if labels.shape != (n,) or (n and not np.issubdtype(labels.dtype, np.integer)):
        raise InputError(f"{source}: expected {n} integer labels, got {labels.dtype} "
                         f"{labels.shape}")
    if n and (labels.min() < 0 or labels.max() >= r.num_classes):
        raise InputError(f"{source}: labels must lie in [0, {r.num_classes}), got "
                         f"[{labels.min()}, {labels.max()}]")
    return data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int64)


def load_cifar(name: str, split: str = "train", data_dir: str | os.PathLike | None = None, *,
               download: bool = False, labels: str = "fine") -> ImageDataset:
    """Load CIFAR-10 or CIFAR-100 (official python-pickle release).

    Parameters
    ----------
    name : {"cifar10", "cifar100"}
    split : {"train", "test"}
        The 50 000 training or 10 000 test images (carve a validation split with
        :func:`virolbi.data.load_dataset`).
    data_dir : path
        Directory holding the unpacked release folder or its ``.tar.gz`` (the folder or archive
        itself is accepted too).
    download : bool, default False
        Fetch the official archive when it is not there (MD5-checked).
    labels : {"fine", "coarse"}
        CIFAR-100: its 100 classes ("fine", default) or its 20 superclasses ("coarse").

    Returns
    -------
    ImageDataset
        ``data`` uint8 ``(N, 32, 32, 3)``, ``targets`` int64, ``classes`` from the release's meta
        file (CIFAR-100: ``fine_label_names``, or ``coarse_label_names`` with coarse labels).

    Examples
    --------
    >>> load_cifar("cifar10", "val", "/nonexistent")
    Traceback (most recent call last):
    ...
    virolbi.errors.InputError: cifar10 has splits 'train' and 'test', got 'val'
    """
    r = _labelled(_release(name), name, labels)
    if split not in ("train", "test"):
        raise InputError(f"{name} has splits 'train' and 'test', got {split!r}")
    src = _Source(_locate(name, data_dir, download), r)
    try:
        meta_bytes, meta_src = src.read(r.meta)
        meta = safe_unpickle(meta_bytes, meta_src)
        if isinstance(meta, dict):
            meta = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in meta.items()}
        names = meta.get(r.names_key) if isinstance(meta, dict) else None
        if not isinstance(names, list) or len(names) != r.num_classes:
            raise InputError(f"{meta_src}: expected {r.num_classes} class names under "
                             f"{r.names_key!r}")
        classes = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
        parts = []
        for fname in (r.train if split == "train" else r.test):
            data, source = src.read(fname)
            parts.append(_parse_batch(safe_unpickle(data, source), source, r))
    finally:
        src.close()
    images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
    targets = np.concatenate([p[1] for p in parts])
    suffix = "-coarse" if labels == "coarse" else ""
    return ImageDataset(images, targets, classes, name=f"{name}{suffix}-{split}")
