"""The gray-scale denoising sets (``../shared/data/denoising-gray/images.tar.gz``): Train400 to train,
Set12 and BSD68 to test, read straight from the archive (8-bit PNGs, mode L), and random training
patches with DnCNN's flips and rotations."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import torch

from virolbi.errors import InputError

__all__ = ["SETS", "SHARED_ARCHIVE", "load_gray_set", "random_patches", "to_tensor"]

SETS = ("train400", "set12", "bsd68")
#: The shared archive, found from the repository (the project's root beside ../shared).
SHARED_ARCHIVE = (Path(__file__).resolve().parents[3].parent / "shared" / "data" / "denoising-gray"
                  / "images.tar.gz")


def load_gray_set(name: str, archive: str | os.PathLike | None = None) -> list[np.ndarray]:
    """The images of one set as ``uint8 (H, W)`` arrays, in file-name order.

    Examples
    --------
    >>> imgs = load_gray_set("set12")
    >>> len(imgs), imgs[0].dtype
    (12, dtype('uint8'))
    """
    from PIL import Image

    if name not in SETS:
        raise InputError(f"unknown denoising set {name!r}; choose one of {', '.join(SETS)}")
    path = Path(archive) if archive is not None else SHARED_ARCHIVE
    if not path.is_file():
        raise InputError(f"denoising archive not found: {path} (pass archive=)")
    out = []
    with tarfile.open(path) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.startswith(name + "/")
                          and m.name.lower().endswith(".png")), key=lambda m: m.name)
        for m in members:
            data = tar.extractfile(m).read()
            out.append(np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.uint8))
    if not out:
        raise InputError(f"{path} holds no PNG under {name}/")
    return out


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``uint8 (H, W)`` → float ``(1, 1, H, W)`` in [0, 1]."""
    return torch.from_numpy(image.astype(np.float32) / 255.0)[None, None]


def random_patches(images: list[np.ndarray], count: int, size: int,
                   rng: np.random.Generator) -> torch.Tensor:
    """``count`` random ``size`` × ``size`` patches, each flipped/rotated by one of the 8 symmetries
    of the square (DnCNN's augmentation); float ``(count, 1, size, size)`` in [0, 1]."""
    out = np.empty((count, size, size), np.float32)
    for i in range(count):
        img = images[rng.integers(len(images))]
        r, c = rng.integers(img.shape[0] - size + 1), rng.integers(img.shape[1] - size + 1)
        patch = np.rot90(img[r:r + size, c:c + size], k=int(rng.integers(4)))
        out[i] = (patch[:, ::-1] if rng.integers(2) else patch) / 255.0
    return torch.from_numpy(out)[:, None]
