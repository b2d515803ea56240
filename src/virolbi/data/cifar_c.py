"""The released CIFAR-10-C / CIFAR-100-C files, read lazily through a memory map.

Layout (Hendrycks & Dietterich 2019): one directory with ``<corruption>.npy``, ``uint8
(5 N, 32, 32, 3)`` = severities 1–5 in blocks of N images in test-set order, and ``labels.npy``
``(5 N,)``. :func:`virolbi.perturb.write_cifar_c` writes the same layout.
"""

from __future__ import annotations

import operator
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from virolbi.data.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES
from virolbi.data.dataset import ImageDataset
from virolbi.errors import InputError

__all__ = ["load_cifar_c", "list_cifar_c"]

N_SEVERITIES = 5


def list_cifar_c(root: str | os.PathLike) -> list[str]:
    """The corruption names present in a CIFAR-C directory (every ``*.npy`` but labels)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"CIFAR-C directory not found: {root}")
    return sorted(p.stem for p in root.glob("*.npy") if p.stem != "labels")


def _load_npy(path: Path, what: str, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path} is not a valid .npy file (corrupt or truncated?): {exc}") \
            from None


def load_cifar_c(root: str | os.PathLike, corruption: str, severity: int, *,
                 classes: Sequence[str] | None = None) -> ImageDataset:
    """One corruption at one severity from a CIFAR-10-C / CIFAR-100-C directory.

    Parameters
    ----------
    root : path
        Directory holding ``<corruption>.npy`` and ``labels.npy``.
    corruption : str
        E.g. ``"gaussian_noise"`` (see :func:`list_cifar_c`).
    severity : int
        1 to 5: selects the block ``[(severity - 1) N, severity N)``.
    classes : sequence of str, optional
        Class names; default the CIFAR-10 names when labels are below 10, else CIFAR-100's.

    Returns
    -------
    ImageDataset
        ``data`` is a read-only memory map of the block (nothing is read until used).

    Raises
    ------
    InputError
        For a missing or corrupt file, a wrong dtype or shape, an image count not divisible by 5,
        labels that do not match, or a severity outside 1–5.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> blocks = np.arange(5, dtype=np.uint8).repeat(2 * 2 * 2 * 3).reshape(10, 2, 2, 3)
    >>> np.save(d / "gaussian_noise.npy", blocks)  # severity s: 2 images of value s - 1
    >>> np.save(d / "labels.npy", np.tile([3, 7], 5))
    >>> ds = load_cifar_c(d, "gaussian_noise", 4)
    >>> ds.data.shape, int(ds.data.max()), ds.targets.tolist(), ds.classes[3]
    ((2, 2, 2, 3), 3, [3, 7], 'cat')
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"CIFAR-C directory not found: {root}")
    try:
        sev = operator.index(severity)
    except TypeError:
        sev = 0
    if not 1 <= sev <= N_SEVERITIES:
        raise InputError(f"severity must be an integer in 1..5, got {severity!r}")
    if not isinstance(corruption, str) or not corruption or "/" in corruption or \
            corruption == "labels":
        raise InputError(f"corruption must be a corruption name, got {corruption!r}")
    path = root / f"{corruption}.npy"
    if not path.is_file():
        raise InputError(f"corruption {corruption!r} not found in {root} (available: "
                         f"{', '.join(list_cifar_c(root)) or 'none'})")
    images = _load_npy(path, "corruption file", mmap=True)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise InputError(f"{path}: expected uint8 images (5 N, H, W, C), got {images.dtype} "
                         f"array of shape {images.shape}")
    total = images.shape[0]
    if total == 0 or total % N_SEVERITIES:
        raise InputError(f"{path}: {total} images is not 5 severity blocks of equal size")
    labels = _load_npy(root / "labels.npy", "labels file", mmap=False)
    if labels.shape != (total,) or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{root / 'labels.npy'}: expected {total} integer labels (one per image "
                         f"of {path.name}), got {labels.dtype} array of shape {labels.shape}")
    n = total // N_SEVERITIES
    block = slice((sev - 1) * n, sev * n)
    targets = np.asarray(labels[block], dtype=np.int64)
    if classes is None:
        top = int(labels.max())
        classes = CIFAR10_CLASSES if top < 10 else CIFAR100_CLASSES if top < 100 else None
    return ImageDataset(images[block], targets, classes, name=f"{corruption}-{sev}")
