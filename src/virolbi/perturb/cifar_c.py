r"""Write CIFAR-10-C style files from any uint8 image set.

Layout of the released CIFAR-10-C (Hendrycks & Dietterich 2019), which ``virolbi.data.load_cifar_c``
reads: in one directory, ``<corruption>.npy`` holds ``uint8 (5 N, H, W, C)`` = severities 1..5 in
blocks of N images in the order of the source set, and ``labels.npy`` the labels tiled five times.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

from virolbi.checks import check_positive_int
from virolbi.errors import InputError
from virolbi.io import atomic_path
from virolbi.perturb.noise import _check_name, _check_severity, corrupt

__all__ = ["write_cifar_c"]


def _severity_seed(seed: int, corruption: str, severity: int) -> int:
    """An independent, reproducible 63-bit seed per (seed, corruption, severity)."""
    digest = hashlib.sha256(f"{seed}/{corruption}/{severity}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def write_cifar_c(images: np.ndarray, labels: Sequence[int] | np.ndarray, out_dir: str | os.PathLike,
                  corruption: str, severities: Sequence[int] = (1, 2, 3, 4, 5), seed: int = 0, *,
                  batch_size: int = 1000, device: str | torch.device = "cpu") -> Path:
    r"""Corrupt an image set at several severities and save it in the CIFAR-10-C layout.

    Writes ``out_dir/<corruption>.npy``, ``uint8 (N·S, H, W, C)`` with the S severities in blocks of N
    images in the given order, and ``out_dir/labels.npy``, ``int64 (N·S,)``: the labels tiled S
    times. Both files are written atomically (a temporary file renamed into place), the images block
    by block through a memory map, so the full array never sits in memory.

    Parameters
    ----------
    images : ndarray
        ``uint8 (N, H, W, C)``, e.g. the CIFAR-10 test set.
    labels : array-like
        ``(N,)`` integer labels.
    out_dir : path
        Directory to write into (created if missing).
    corruption : str
        One of ``gaussian_noise``, ``shot_noise``, ``impulse_noise``, ``speckle_noise``.
    severities : sequence of int, default (1, 2, 3, 4, 5)
        Severities to write, in this order.
    seed : int, default 0
        Seeds one :class:`torch.Generator` per severity, derived from ``(seed, corruption,
        severity)``: a severity's images do not depend on which other severities are written.
    batch_size : int, default 1000
        Images corrupted at once (the random stream is consumed batch by batch, so the same seed
        with another batch size can give other noise).
    device : str or torch.device, default "cpu"
        Where the corruption is computed (the noise is drawn on the CPU either way).

    Returns
    -------
    Path
        The path of ``<corruption>.npy``.

    References
    ----------
    D. Hendrycks and T. Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
    Perturbations", ICLR 2019.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> imgs = np.full((4, 8, 8, 3), 128, dtype=np.uint8)
    >>> path = write_cifar_c(imgs, [0, 1, 2, 3], tempfile.mkdtemp(), "impulse_noise", (1, 5))
    >>> np.load(path).shape, np.load(path.parent / "labels.npy").tolist()
    ((8, 8, 8, 3), [0, 1, 2, 3, 0, 1, 2, 3])
    """
    name = _check_name(corruption)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        got = (f"{images.dtype} array of shape {images.shape}" if isinstance(images, np.ndarray)
               else type(images).__name__)
        raise InputError(f"images must be a uint8 numpy array of shape (N, H, W, C), got {got}")
    n = images.shape[0]
    if n == 0:
        raise InputError("images is empty (N = 0)")
    labels_arr = np.asarray(labels)
    if labels_arr.shape != (n,) or not np.issubdtype(labels_arr.dtype, np.integer):
        raise InputError(f"labels must be {n} integers (one per image), got {labels_arr.dtype} "
                         f"array of shape {labels_arr.shape}")
    if isinstance(severities, (int, np.integer)):
        severities = (int(severities),)
    sev = tuple(_check_severity(s) for s in severities)
    if not sev:
        raise InputError("severities must not be empty")
    bs = check_positive_int(batch_size, "batch_size")

    out_dir = Path(out_dir)
    path = out_dir / f"{name}.npy"
    with atomic_path(path) as tmp:
        out = open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n * len(sev), *images.shape[1:]))
        for k, s in enumerate(tqdm(sev, desc=name, unit="severity", disable=None)):
            g = torch.Generator().manual_seed(_severity_seed(seed, name, s))
            for start in range(0, n, bs):
                chunk = torch.from_numpy(images[start:start + bs]).to(device)
                x = chunk.permute(0, 3, 1, 2).to(torch.float32) / 255.0
                y = corrupt(x, name, s, generator=g)
                block = torch.round(y * 255.0).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
                out[k * n + start:k * n + start + block.shape[0]] = block
        out.flush()
        del out
    with atomic_path(out_dir / "labels.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.tile(labels_arr.astype(np.int64), len(sev)))
    return path
