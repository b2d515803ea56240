"""Smoothed copies of a dataset, computed once and cached on disk (Fixed and Iterative training).

Fixed training (paper §3.2) trains on the images smoothed at one sparsity level; Iterative training
(Eq. 9) on images that get finer as training goes. Both read their images from a smoothed store
(:mod:`virolbi.store`): ũ at ``L`` sparsity levels for the ``N`` images, computed with one
:func:`virolbi.image_path` run per image (the path is recorded as each level is crossed, so all
levels cost one run to the last one), in shards ``uint8 (L, n, H, W, C)``.

The store comes from one of two places:

- a folder written by ``virolbi smooth-dataset`` (the config's ``procedure.store``), checked
  against the training set, the levels and the smoother options (:func:`store_for_training`);
- this cache: ``<cache_dir>/smoothed/<key>/`` where ``key`` is the SHA-256 of the dataset's
  identity (SHA-256 of its pixels and shape, or a caller-given string), the levels and the
  smoother's parameters, ``virolbi.__version__`` and :data:`SMOOTHER_CODE_VERSION` (bump it when
  the smoother's output changes), so changing any of them computes a new entry, and the same
  request finds the old one (:func:`smoothed_images`).

A request whose levels are all stored in an existing entry of the same images, parameters and code
(one image path run serves every level it recorded: Table 5's sweep, Fixed and Iterative) reads
that entry instead of computing a new one. Entries are stores written by
:func:`virolbi.store.build_store` (atomic shards, checksums in the manifest; a damaged shard is
recomputed with a :class:`CacheRebuildWarning`); an entry of the earlier single-array layout
(``images.npy`` + ``meta.json``) is read as a store of one shard, without recomputation.
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
from virolbi.store import (SMOOTHER_CODE_VERSION, SmoothedStore, StoreRepairWarning, build_store,
                           dataset_fingerprint, open_smoothed, source_identity)
from virolbi.store.manifest import fn_name as _fn_name
from virolbi.store.manifest import read_manifest, smoother_params

__all__ = ["SMOOTHER_CODE_VERSION", "SmoothedSet", "CacheRebuildWarning", "smoothed_images",
           "dataset_fingerprint", "cache_key", "default_cache_dir", "store_for_training"]

PathFn = Callable[..., Any]
#: Images per shard of a cache entry.
CACHE_SHARD_SIZE = 4096

#: A cache entry was found damaged (checksum or shape mismatch) and is being rebuilt.
CacheRebuildWarning = StoreRepairWarning


@dataclass(frozen=True)
class SmoothedSet:
    """A cached smoothed dataset.

    Attributes
    ----------
    store : SmoothedStore
        The entry, memory-mapped and read-only (``store.take(indices, level)`` reads a batch).
    key : str
        The cache key (hex SHA-256).
    path : Path
        The entry's directory.
    built : bool
        True if this call computed (part of) the entry, False if it was read from the cache.
    """

    store: SmoothedStore
    key: str
    path: Path
    built: bool

    @property
    def levels(self) -> tuple[float, ...]:
        """The stored sparsity levels, increasing (coarse to fine): those asked for, or a superset
        when an existing entry recorded more of the same path. Use :meth:`at` to pick one."""
        return self.store.levels

    @property
    def images(self) -> np.ndarray:
        """``uint8 (L, N, H, W, C)``: ``images[l]`` is the dataset at ``levels[l]`` (the
        memory map itself for an entry of one shard, else read into memory)."""
        if len(self.store.shards) == 1:
            return self.store.shard(0)
        return np.stack([self.store.at(v) for v in self.levels])

    def at(self, sparsity: float) -> np.ndarray:
        """``uint8 (N, H, W, C)``: the images at one of :attr:`levels`."""
        if not any(abs(v - float(sparsity)) < 1e-9 for v in self.levels):
            raise InputError(f"sparsity {sparsity} is not one of the cached levels "
                             f"{list(self.levels)}")
        return self.store.at(sparsity)


def default_cache_dir() -> Path:
    """``$VIROLBI_CACHE`` if set, else ``~/.cache/virolbi``."""
    env = os.environ.get("VIROLBI_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "virolbi"


def cache_key(identity: str, levels: Sequence[float], params: dict[str, Any],
              path_fn: PathFn | None = None) -> str:
    """The cache key: SHA-256 of the dataset identity, levels, smoother parameters and versions."""
    import virolbi

    payload = {"dataset": identity, "levels": [round(float(v), 9) for v in levels],
               "params": {k: params[k] for k in sorted(params)}, "virolbi": virolbi.__version__,
               "code": SMOOTHER_CODE_VERSION, "fn": _fn_name(path_fn)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _same_run(manifest: dict[str, Any], identity: str, n_images: int, params: dict[str, Any],
              path_fn: PathFn | None) -> bool:
    """Whether a stored entry comes from the same images, smoother options and code."""
    import virolbi

    return (manifest["source"].get("identity") == identity
            and manifest["source"].get("n_images") == n_images
            and manifest.get("params") == smoother_params(params)
            and manifest.get("path_fn") == _fn_name(path_fn)
            and manifest.get("virolbi") == virolbi.__version__
            and manifest.get("code_version") == SMOOTHER_CODE_VERSION)


def _read(entry: Path) -> dict[str, Any] | None:
    try:
        return read_manifest(entry)
    except (InputError, ValueError, KeyError, OSError):
        return None


def _legacy_store(entry: Path, manifest: dict[str, Any], shape: tuple[int, ...],
                  verify: bool) -> SmoothedStore | None:
    """A single-array entry (``images.npy`` + ``meta.json``) as a store of one shard; None after
    a :class:`CacheRebuildWarning` (and the entry removed) when it is damaged."""
    img = entry / manifest["shards"][0]["file"]
    problem = None
    try:
        arr = np.load(img, mmap_mode="r", allow_pickle=False)
        if tuple(arr.shape) != shape or arr.dtype != np.uint8:
            problem = f"shape {arr.shape} {arr.dtype}, expected {shape} uint8"
        elif verify and _file_sha256(img) != manifest["shards"][0]["sha256"]:
            problem = "checksum mismatch"
    except (ValueError, OSError) as exc:
        problem = str(exc)
    if problem is None:
        return SmoothedStore(entry, manifest)
    warnings.warn(f"smoothed cache entry {entry} is damaged ({problem}); rebuilding",
                  CacheRebuildWarning, stacklevel=4)
    shutil.rmtree(entry, ignore_errors=True)
    return None


def _superset_entry(root: Path, identity: str, levels: Sequence[float], params: dict[str, Any],
                    path_fn: PathFn | None, image_shape: tuple[int, ...],
                    verify: bool) -> SmoothedSet | None:
    """An existing complete entry of the same images, parameters and code whose levels include
    ``levels``."""
    wanted = {round(float(v), 9) for v in levels}
    n = image_shape[0]
    for entry in sorted(p for p in root.glob("*") if p.is_dir()):
        m = _read(entry)
        if (m is None or not m.get("complete") or not _same_run(m, identity, n, params, path_fn)
                or not wanted <= {round(float(v), 9) for v in m["levels"]}):
            continue
        if m.get("legacy"):
            store = _legacy_store(entry, m, (len(m["levels"]),) + image_shape, verify)
        else:
            try:
                store = open_smoothed(entry, verify=verify)
            except InputError:
                store = None
        if store is not None:
            return SmoothedSet(store, entry.name, entry, built=False)
    return None


def _check_images(images: Any, batch_size: int) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
        got = (f"{images.dtype} array of shape {images.shape}" if isinstance(images, np.ndarray)
               else type(images).__name__)
        raise InputError(f"smoothed_images expects uint8 images (N, H, W, C), got {got}")
    if images.shape[0] == 0:
        raise InputError("smoothed_images got an empty dataset (0 images)")
    check_positive_int(batch_size, "batch_size")


def smoothed_images(images: np.ndarray, levels: Sequence[float] | float = 0.6, *,
                    cache_dir: str | os.PathLike | None = None, identity: str | None = None,
                    batch_size: int = 256, progress: bool | None = None, verify: bool = True,
                    path_fn: PathFn | None = None, **params: Any) -> SmoothedSet:
    r"""ũ of every image at every level, from the cache or computed (and cached) now.

    Computes ``path_fn(x, levels, **params)`` (default :func:`virolbi.image_path`, one LBI run per
    image, Eq. 5–8 and Prop. 1) on batches of ``batch_size`` images in this process (the
    smoother spreads a batch over torch's threads) and stores the result as a smoothed store
    (:func:`virolbi.store.build_store`). A second call with the same images, levels, parameters
    and code version reads the stored entry instead; an interrupted one continues it.

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
        tqdm bar over images (None: only on a terminal).
    verify : bool
        Check the stored files' SHA-256 before using them (default True).
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
    _check_images(images, batch_size)
    levels = check_levels(levels, "levels")
    identity = identity if identity is not None else dataset_fingerprint(images)
    key = cache_key(identity, levels, params, path_fn)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    entry = root / "smoothed" / key
    found = _read(entry)
    if found is not None and found.get("legacy"):
        store = _legacy_store(entry, found, (len(levels),) + images.shape, verify)
        if store is not None:
            return SmoothedSet(store, key, entry, built=False)
    elif found is None:
        sup = _superset_entry(root / "smoothed", identity, levels, params, path_fn,
                              images.shape, verify)
        if sup is not None:
            return sup
    report = build_store(images, entry, levels, workers=1, one_thread=False,
                         shard_size=CACHE_SHARD_SIZE, batch_size=batch_size, path_fn=path_fn,
                         params=params, identity=identity, description="smoothed cache entry",
                         progress=progress, verify=verify, wait=True,
                         code_version=SMOOTHER_CODE_VERSION)
    return SmoothedSet(report.store, key, entry, built=report.computed > 0)


def store_for_training(dataset: Any, path: str | os.PathLike, levels: Sequence[float],
                       params: dict[str, Any] | None, path_fn: PathFn | None = None, *,
                       verify: bool = True) -> SmoothedStore:
    """The store in ``path`` (``virolbi smooth-dataset``'s output) checked against a training set:
    the same images in the same order, every level of ``levels``, the same smoother options and
    code; one line naming the difference otherwise (:class:`InputError`)."""
    import virolbi

    store = open_smoothed(path, verify=verify)
    m, where = store.manifest, f"procedure.store {path}"
    if len(store) != len(dataset):
        raise InputError(f"{where} holds {len(store)} images, the training set {len(dataset)}")
    if m["source"].get("identity") != source_identity(dataset):
        raise InputError(f"{where} was smoothed from other images than the training set "
                         f"({m['source'].get('description') or 'unknown source'})")
    missing = [v for v in levels if not any(abs(v - s) < 1e-9 for s in store.levels)]
    if missing:
        raise InputError(f"{where} has levels {list(store.levels)}, not {missing}")
    for key, want in (("params", smoother_params(params)), ("path_fn", _fn_name(path_fn)),
                      ("code_version", SMOOTHER_CODE_VERSION), ("virolbi", virolbi.__version__)):
        if m.get(key) != want:
            raise InputError(f"{where} was smoothed with {key} {m.get(key)}, the training "
                             f"uses {want}")
    return store
