"""Smoothed copies of a dataset, computed once and cached on disk (Fixed and Iterative training).

Fixed training (paper §3.2) trains on the images smoothed at one sparsity level; Iterative training
(Eq. 9) on images that get finer as training goes. Both read their images from one array
``uint8 (L, N, H, W, C)``: ũ at ``L`` sparsity levels for the ``N`` images, computed with one
:func:`virolbi.image_path` run per image (the path is recorded as each level is crossed, so all
levels cost one run to the last one).

The array is cached under ``<cache_dir>/smoothed/<key>/`` where ``key`` is the SHA-256 of

- the dataset's identity (SHA-256 of its pixels and shape, or a caller-given string),
- the levels and the smoother's parameters,
- ``virolbi.__version__`` and :data:`SMOOTHER_CODE_VERSION` (bump it when the smoother's output
  changes),

so changing any of them computes a new entry, and the same request finds the old one. A request
whose levels are all stored in an existing entry of the same images, parameters and code (one image
path run serves every level it recorded: Table 5's sweep, Fixed and Iterative) reads that entry
instead of computing a new one. Entries are
written atomically (``images.npy`` then ``meta.json`` with the file's SHA-256, last); an entry whose
checksum or shape does not match is rebuilt with a :class:`CacheRebuildWarning`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from virolbi.checks import check_levels, check_positive_int
from virolbi.data.cache import file_sha256 as _file_sha256
from virolbi.errors import InputError
from virolbi.io import atomic_path, load_json, save_json

__all__ = ["SMOOTHER_CODE_VERSION", "SmoothedSet", "CacheRebuildWarning", "smoothed_images",
           "dataset_fingerprint", "cache_key", "default_cache_dir"]

#: Version of the smoothing code path as far as cached outputs go: bump when ũ changes.
SMOOTHER_CODE_VERSION = 1

PathFn = Callable[..., Any]


class CacheRebuildWarning(UserWarning):
    """A cache entry was found damaged (checksum or shape mismatch) and is being rebuilt."""


@dataclass(frozen=True)
class SmoothedSet:
    """A cached smoothed dataset.

    Attributes
    ----------
    images : ndarray
        ``uint8 (L, N, H, W, C)`` (memory-mapped, read-only): ``images[l]`` is the dataset at
        ``levels[l]``.
    levels : tuple of float
        The stored sparsity levels, increasing (coarse to fine): those asked for, or a superset
        when an existing entry recorded more of the same path. Use :meth:`at` to pick one.
    key : str
        The cache key (hex SHA-256).
    path : Path
        The entry's directory.
    built : bool
        True if this call computed the entry, False if it was read from the cache.
    """

    images: np.ndarray
    levels: tuple[float, ...]
    key: str
    path: Path
    built: bool

    def at(self, sparsity: float) -> np.ndarray:
        """``uint8 (N, H, W, C)``: the images at one of :attr:`levels`."""
        for i, level in enumerate(self.levels):
            if abs(level - float(sparsity)) < 1e-9:
                return self.images[i]
        raise InputError(f"sparsity {sparsity} is not one of the cached levels {list(self.levels)}")


def default_cache_dir() -> Path:
    """``$VIROLBI_CACHE`` if set, else ``~/.cache/virolbi``."""
    env = os.environ.get("VIROLBI_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "virolbi"


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


def _fn_name(fn: PathFn | None) -> str:
    if fn is None:
        return "virolbi.image_path"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def cache_key(identity: str, levels: Sequence[float], params: dict[str, Any],
              path_fn: PathFn | None = None) -> str:
    """The cache key: SHA-256 of the dataset identity, levels, smoother parameters and versions."""
    import virolbi

    payload = {"dataset": identity, "levels": [round(float(v), 9) for v in levels],
               "params": {k: params[k] for k in sorted(params)}, "virolbi": virolbi.__version__,
               "code": SMOOTHER_CODE_VERSION, "fn": _fn_name(path_fn)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _superset_entry(root: Path, identity: str, levels: Sequence[float], params: dict[str, Any],
                    fn_name: str, n_images: int, verify: bool) -> SmoothedSet | None:
    """An existing entry of the same images, parameters and code whose levels include ``levels``."""
    import virolbi

    wanted = {round(float(v), 9) for v in levels}
    same = json.loads(json.dumps(params, sort_keys=True, default=str))
    for meta_path in sorted(root.glob("*/meta.json")):
        try:
            meta = load_json(meta_path)
        except (InputError, ValueError, OSError):
            continue
        stored = [round(float(v), 9) for v in meta.get("levels", [])]
        if (meta.get("identity") != identity or meta.get("params") != same
                or meta.get("path_fn") != fn_name or meta.get("virolbi") != virolbi.__version__
                or meta.get("code_version") != SMOOTHER_CODE_VERSION or not wanted <= set(stored)):
            continue
        shape = tuple(meta.get("shape", ()))
        if len(shape) != 5 or shape[0] != len(stored) or shape[1] != n_images:
            continue
        arr = _load_entry(meta_path.parent, shape, verify)
        if arr is not None:
            return SmoothedSet(arr, tuple(stored), meta_path.parent.name, meta_path.parent,
                               built=False)
    return None


def _load_entry(entry: Path, shape: tuple[int, ...], verify: bool) -> np.ndarray | None:
    """The cached array, or None if absent; warn and return None if damaged."""
    meta_path, img_path = entry / "meta.json", entry / "images.npy"
    if not meta_path.exists():
        return None
    problem = None
    try:
        meta = load_json(meta_path)
        if not img_path.exists():
            problem = "images.npy is missing"
        elif verify and _file_sha256(img_path) != meta.get("sha256"):
            problem = "checksum mismatch"
        else:
            arr = np.load(img_path, mmap_mode="r", allow_pickle=False)
            if tuple(arr.shape) != shape or arr.dtype != np.uint8:
                problem = f"shape {arr.shape} {arr.dtype}, expected {shape} uint8"
            else:
                return arr
    except (InputError, ValueError, OSError) as exc:
        problem = str(exc)
    warnings.warn(f"smoothed cache entry {entry} is damaged ({problem}); rebuilding",
                  CacheRebuildWarning, stacklevel=3)
    shutil.rmtree(entry, ignore_errors=True)
    return None


def smoothed_images(images: np.ndarray, levels: Sequence[float] | float = 0.6, *,
                    cache_dir: str | os.PathLike | None = None, identity: str | None = None,
                    batch_size: int = 256, progress: bool | None = None, verify: bool = True,
                    path_fn: PathFn | None = None, **params: Any) -> SmoothedSet:
    r"""ũ of every image at every level, from the cache or computed (and cached) now.

    Computes ``path_fn(x, levels, **params)`` (default :func:`virolbi.image_path`, one LBI run per
    image, Eq. 5–8 and Prop. 1) on batches of ``batch_size`` images and stores the result as
    ``uint8 (L, N, H, W, C)``. A second call with the same images, levels, parameters and code
    version reads the stored array instead.

    Parameters
    ----------
    images : ndarray
        ``uint8 (N, H, W, C)`` (a dataset's ``.data``).
    levels : float or sequence of float
        Sparsity levels in (0, 1], stored in increasing order. Fixed training: one level (0.6
        CIFAR, 0.3 ImageNet100); Iterative: the schedule's levels (0.3 … 0.8).
    cache_dir : path-like, optional
        Cache root (default :func:`default_cache_dir`); entries go under ``smoothed/<key>``.
    identity : str, optional
        Dataset identity for the key (default: :func:`dataset_fingerprint` of ``images``).
    batch_size : int
        Images per smoother call (default 256).
    progress : bool, optional
        tqdm bar over batches (None: only on a terminal).
    verify : bool
        Check the stored file's SHA-256 before using it (default True).
    path_fn : callable, optional
        ``path_fn(x uint8 (B, C, H, W), levels, **params) -> uint8 (L, B, C, H, W)``; its name
        enters the key.
    **params
        Smoother options (``kappa``, ``nu``, ``group``, ``solver``, ...), part of the key.

    Returns
    -------
    SmoothedSet

    Examples
    --------
    >>> import tempfile
    >>> imgs = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    >>> d = tempfile.mkdtemp()
    >>> s = smoothed_images(imgs, [0.5, 1.0], cache_dir=d, progress=False)
    >>> s.images.shape, s.built, smoothed_images(imgs, [0.5, 1.0], cache_dir=d).built
    ((2, 3, 8, 8, 3), True, False)
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        got = (f"{images.dtype} array of shape {images.shape}" if isinstance(images, np.ndarray)
               else type(images).__name__)
        raise InputError(f"smoothed_images expects uint8 images (N, H, W, C), got {got}")
    if images.shape[0] == 0:
        raise InputError("smoothed_images got an empty dataset (0 images)")
    batch_size = check_positive_int(batch_size, "batch_size")
    levels = check_levels(levels, "levels")
    identity = identity if identity is not None else dataset_fingerprint(images)
    key = cache_key(identity, levels, params, path_fn)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    entry = root / "smoothed" / key
    n, h, w, c = images.shape
    shape = (len(levels), n, h, w, c)
    arr = _load_entry(entry, shape, verify)
    if arr is not None:
        return SmoothedSet(arr, levels, key, entry, built=False)
    fn_name = _fn_name(path_fn)
    found = _superset_entry(root / "smoothed", identity, levels, params, fn_name, n, verify)
    if found is not None:
        return found

    if path_fn is None:
        from virolbi import image_path as path_fn  # noqa: N813
    from tqdm.auto import tqdm

    entry.mkdir(parents=True, exist_ok=True)
    with atomic_path(entry / "images.npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        bar = tqdm(range(0, n, batch_size), desc=f"smoothing {n} images at {len(levels)} levels",
                   unit="batch", disable=(None if progress is None else not progress), leave=False)
        for start in bar:
            chunk = np.ascontiguousarray(images[start:start + batch_size].transpose(0, 3, 1, 2))
            res = np.asarray(path_fn(chunk, levels, **params))
            if res.shape != (len(levels),) + chunk.shape or res.dtype != np.uint8:
                raise InputError(f"path function returned {res.dtype} {res.shape}, expected uint8 "
                                 f"{(len(levels),) + chunk.shape}")
            out[:, start:start + chunk.shape[0]] = res.transpose(0, 1, 3, 4, 2)
        out.flush()
        del out
        digest = _file_sha256(tmp)
    import virolbi

    save_json({"sha256": digest, "shape": list(shape), "levels": list(levels), "params": params,
               "identity": identity, "code_version": SMOOTHER_CODE_VERSION,
               "virolbi": virolbi.__version__,
               "path_fn": fn_name}, entry / "meta.json")
    arr = np.load(entry / "images.npy", mmap_mode="r", allow_pickle=False)
    return SmoothedSet(arr, levels, key, entry, built=True)
