"""Image files in and out of the smoother: read and check image files and ``.npy`` arrays
(:class:`LoadedImage`), batch them by size, run a smoothing function over the batches with the
unreached-level warnings split per image, and write results back in the input's kind (PNG for
images, ``.npy`` for arrays). Used by ``virolbi smooth``, ``virolbi path`` and ``virolbi demo``.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from virolbi.checks import check_image_batch
from virolbi.errors import InputError, UnreachedLevelWarning

__all__ = ["LoadedImage", "load_image", "load_images", "size_groups", "split_warnings",
           "run_catching_unreached", "level_tag", "output_name", "write_output",
           "smoothed_batches"]


@dataclass
class LoadedImage:
    """One input: its file, its pixels as float ``(C, H, W)`` in [0, 1], how to write it back."""

    path: Path
    image: torch.Tensor  # float32 (float64 for float64 arrays) (C, H, W)
    gray_2d: bool  # input was (H, W): write (H, W) back
    is_array: bool  # came from .npy: write .npy back
    dtype: np.dtype  # .npy input dtype (float32/float64) to keep
    alpha_dropped: bool = False  # the file had transparency, which is not read (nor written back)

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def size(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]


def _read_array(path: Path) -> tuple[np.ndarray, bool]:
    """A ``.npy`` float image ``(C, H, W)`` or ``(H, W)`` in [0, 1] (or uint8), checked."""
    if not path.exists():
        raise InputError(f"image not found: {path}")
    if path.is_dir():
        raise InputError(f"expected an image file, got a directory: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"cannot read {path} as a NumPy array: {exc}") from None
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{path} holds several arrays; expected one image array")
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{path}: images must be float in [0, 1] or uint8, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise InputError(f"{path}: expected an image array (C, H, W) or (H, W), got shape "
                         f"{arr.shape}")
    if arr.ndim == 3 and arr.shape[0] > 4 and arr.shape[-1] in (1, 3, 4):
        raise InputError(f"{path}: shape {arr.shape} looks channels-last (H, W, C); save it as "
                         f"(C, H, W), e.g. numpy.moveaxis(x, -1, 0)")
    return arr, arr.ndim == 2


def load_image(path: str | Path) -> LoadedImage:
    """Read one input file (an image, or a ``.npy`` array) and check it as the smoother would,
    with the file name in every message."""
    from virolbi.io import read_image_with_alpha

    path = Path(path)
    alpha_dropped = False
    if path.suffix.lower() == ".npy":
        arr, gray = _read_array(path)
        dtype = arr.dtype if arr.dtype != np.uint8 else np.dtype(np.float32)
        t = torch.from_numpy(np.array(arr, copy=True))
        # float64 arrays are smoothed in float64; everything else in float32
        t = t.float() / 255.0 if t.dtype == torch.uint8 else (
            t if t.dtype == torch.float64 else t.float())
        t = t[None] if gray else t
        is_array = True
    else:
        arr, alpha_dropped = read_image_with_alpha(path)  # uint8 (H, W) or (H, W, 3), no alpha
        gray = arr.ndim == 2
        t = torch.from_numpy(np.array(arr, copy=True)).float() / 255.0
        t = t[None] if gray else t.permute(2, 0, 1).contiguous()
        dtype, is_array = np.dtype(np.uint8), False
    check_image_batch(t[None], str(path))
    return LoadedImage(path=path, image=t, gray_2d=gray, is_array=is_array, dtype=dtype,
                       alpha_dropped=alpha_dropped)


def load_images(paths: Iterable[str | Path]) -> list[LoadedImage]:
    """Read and check every input before any work is done."""
    paths = list(paths)
    if not paths:
        raise InputError("no input images given")
    return [load_image(p) for p in paths]


def size_groups(images: list[LoadedImage], batch_size: int) -> list[list[int]]:
    """Indices of the inputs grouped by size (C, H, W) and float type, in order of first
    appearance, each group cut into batches of at most ``batch_size``."""
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault((im.size, im.image.dtype), []).append(i)
    batches = []
    for idx in groups.values():
        batches += [idx[k:k + batch_size] for k in range(0, len(idx), batch_size)]
    return batches


def split_warnings(records: list, count: int) -> list[list[str]]:
    """The unreached levels of one batch (:class:`~virolbi.errors.UnreachedLevel` records, as carried
    by the :class:`~virolbi.errors.UnreachedLevelWarning` the library raised), one list of lines per
    image of the batch."""
    out: list[list[str]] = [[] for _ in range(count)]
    for rec in records:
        out[rec.image].append(rec.message())
    return out


def run_catching_unreached(fn, x):
    """``fn(x)`` with the library's :class:`~virolbi.errors.UnreachedLevelWarning` caught (the command
    reports it per image itself); returns ``(fn's result, the warning's records)``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnreachedLevelWarning)
        result = fn(x)
    records = []
    for w in caught:
        if isinstance(w.message, UnreachedLevelWarning):
            records.extend(w.message.records)
        else:  # anything else goes on as it would have
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result, records


def level_tag(level: float) -> str:
    """``0.6 -> "s0.60"``, the suffix of output file names.

    >>> level_tag(0.6), level_tag(1.0), level_tag(0.125)
    ('s0.60', 's1.00', 's0.125')
    """
    text = f"{level:.2f}"
    return f"s{text}" if abs(float(text) - level) < 1e-12 else f"s{level:g}"


def output_name(image: LoadedImage, level: float) -> str:
    """``<stem>_s0.60.png`` (``.npy`` for array inputs)."""
    return f"{image.stem}_{level_tag(level)}{'.npy' if image.is_array else '.png'}"


def write_output(image: LoadedImage, smoothed: torch.Tensor, path: Path) -> Path:
    """Write one smoothed ``(C, H, W)`` image atomically in the input's own form."""
    from virolbi.io import atomic_path, write_image

    arr = smoothed.detach().cpu().numpy()
    if image.gray_2d:
        arr = arr[0]
    if image.is_array:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, arr.astype(image.dtype, copy=False))
        return path
    if arr.ndim == 3:
        arr = np.moveaxis(arr, 0, -1)
    return write_image(arr, path)


def smoothed_batches(images: list[LoadedImage], batch_size: int, desc: str, fn):
    """Run ``fn(x) -> (out, info)`` on the images batched by :func:`size_groups`, with a bar.

    Yields, per batch, ``(batch, out, info, warnings, seconds)``: the image indices, ``fn``'s output
    and info (a result with ``warnings``) for the stacked images ``x``, the warnings split per image
    (:func:`split_warnings`) and the seconds ``fn`` took. The bar moves on once the caller is done
    with the batch.
    """
    from tqdm.auto import tqdm

    with tqdm(total=len(images), desc=desc, unit="img", disable=None, leave=False) as bar:
        for batch in size_groups(images, batch_size):
            x = torch.stack([images[i].image for i in batch])
            t0 = time.perf_counter()
            (out, info), records = run_catching_unreached(fn, x)
            seconds = time.perf_counter() - t0
            per_image = split_warnings(records, len(batch))
            yield batch, out, info, per_image, seconds
            bar.update(len(batch))
