"""On-disk cache of decoded image arrays: atomic, checksummed, rebuilt when corrupt.

An entry is a directory holding ``images.npy`` (uint8 ``(N, H, W, C)``), ``targets.npy`` (int64
``(N,)``) and ``meta.json`` (classes, file names, source, and the SHA-256 of both arrays). The JSON is
written last, so an interrupted build leaves no entry that looks complete.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from virolbi.errors import InputError
from virolbi.io import atomic_path, load_json, save_json

__all__ = ["cache_dir", "save_arrays", "load_arrays", "file_sha256", "begin_entry", "finish_entry"]

_FORMAT = 1


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The cache root: ``path`` if given, else ``$VIROLBI_CACHE``, else ``~/.cache/virolbi``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("VIROLBI_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "virolbi"


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 22) -> str:
    """The hexadecimal SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def _save_npy(array: np.ndarray, path: Path) -> str:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        digest = file_sha256(tmp)
    return digest


def begin_entry(entry: str | os.PathLike) -> Path:
    """Create the entry directory and mark it incomplete (remove ``meta.json``)."""
    entry = Path(entry)
    entry.mkdir(parents=True, exist_ok=True)
    (entry / "meta.json").unlink(missing_ok=True)
    return entry


def finish_entry(entry: str | os.PathLike, targets: np.ndarray, meta: dict[str, Any]) -> Path:
    """Complete an entry whose ``images.npy`` is already written (e.g. through a memory map):
    write ``targets.npy``, then ``meta.json`` with both checksums."""
    entry = Path(entry)
    images = np.load(entry / "images.npy", mmap_mode="r", allow_pickle=False)
    shape = list(images.shape)
    del images
    sums = {"images.npy": file_sha256(entry / "images.npy"),
            "targets.npy": _save_npy(np.asarray(targets, dtype=np.int64), entry / "targets.npy")}
    save_json({**meta, "format": _FORMAT, "shape": shape, "sha256": sums}, entry / "meta.json")
    return entry


def save_arrays(entry: str | os.PathLike, images: np.ndarray, targets: np.ndarray,
                meta: dict[str, Any]) -> Path:
    """Write a cache entry (arrays first, ``meta.json`` with their checksums last).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> e = save_arrays(tempfile.mkdtemp(), np.zeros((2, 3, 3, 3), np.uint8), np.array([0, 1]),
    ...                 {"classes": ["a", "b"]})
    >>> imgs, t, meta = load_arrays(e)
    >>> imgs.shape, t.tolist(), meta["classes"]
    ((2, 3, 3, 3), [0, 1], ['a', 'b'])
    """
    entry = begin_entry(entry)
    _save_npy(np.ascontiguousarray(images, dtype=np.uint8), entry / "images.npy")
    return finish_entry(entry, targets, meta)


def load_arrays(entry: str | os.PathLike, *, mmap: bool = True
                ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a cache entry, verifying both checksums.

    Returns
    -------
    images, targets, meta
        ``images`` is memory-mapped (read-only) when ``mmap``.

    Raises
    ------
    InputError
        If the entry is missing, incomplete or its files do not match their checksums.
    """
    entry = Path(entry)
    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        raise InputError(f"cache entry {entry} is missing or incomplete (no meta.json)")
    meta = load_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT or "sha256" not in meta:
        raise InputError(f"cache entry {entry}: meta.json has an unknown format")
    for fname in ("images.npy", "targets.npy"):
        path = entry / fname
        if not path.is_file():
            raise InputError(f"cache entry {entry} is corrupt: {fname} is missing")
        got = file_sha256(path)
        if got != meta["sha256"].get(fname):
            raise InputError(f"cache entry {entry} is corrupt: {fname} has sha256 {got[:12]}..., "
                             f"expected {str(meta['sha256'].get(fname))[:12]}...")
    try:
        images = np.load(entry / "images.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        targets = np.load(entry / "targets.npy", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"cache entry {entry} is corrupt: {exc}") from None
    if list(images.shape) != meta.get("shape") or targets.shape != images.shape[:1]:
        raise InputError(f"cache entry {entry} is corrupt: shapes {images.shape} and "
                         f"{targets.shape} do not match meta.json")
    return images, targets, meta
