"""Reading a smoothed store: :func:`open_smoothed` and :class:`SmoothedStore`.

The store is read-only and memory-mapped: a shard file is opened (``np.load(mmap_mode="r")``) the
first time one of its images is asked for, so a process that reads only some images (a DDP rank
reading its own part of each batch) only maps the shards that hold them and only reads their
pages. A cache entry of the single-array layout (``images.npy`` + ``meta.json``) is the same
thing with one shard.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from virolbi.data.cache import file_sha256
from virolbi.errors import InputError
from virolbi.store.manifest import TARGETS, read_manifest

__all__ = ["SmoothedStore", "open_smoothed"]


class SmoothedStore:
    """A finished smoothed store (see :func:`open_smoothed`).

    ``len(store)`` images; ``store[i]`` is ``(uint8 (L, H, W, C), target)``: image ``i`` (in the
    source's order) at every level of :attr:`levels` (coarse to fine), and its label (None when
    the source had none). :meth:`take` reads a batch at one level.
    """

    def __init__(self, root: str | os.PathLike, manifest: dict[str, Any]) -> None:
        self.root, self.manifest = Path(root), manifest
        self.levels: tuple[float, ...] = tuple(float(v) for v in manifest["levels"])
        self.image_shape: tuple[int, ...] = tuple(manifest["source"]["image_shape"])
        self.shards: list[dict[str, Any]] = manifest["shards"]
        self._starts = np.array([s["start"] for s in self.shards], np.int64)
        self._maps: dict[int, np.ndarray] = {}
        t = self.root / TARGETS
        self.targets = np.load(t, allow_pickle=False) if manifest.get("targets") else None

    def __len__(self) -> int:
        return int(self.manifest["source"]["n_images"])

    def __repr__(self) -> str:
        return (f"SmoothedStore({str(self.root)!r}, n={len(self)}, levels={list(self.levels)}, "
                f"shards={len(self.shards)})")

    @property
    def opened(self) -> frozenset[int]:
        """The shards this object has mapped so far."""
        return frozenset(self._maps)

    def shard(self, k: int) -> np.ndarray:
        """Shard ``k`` as a read-only memory map ``uint8 (L, n, H, W, C)``."""
        if k not in self._maps:
            s = self.shards[k]
            path = self.root / s["file"]
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise InputError(f"smoothed store {self.root}: cannot read {s['file']} "
                                 f"({exc}); rerun virolbi smooth-dataset to recompute it") from None
            want = (len(self.levels), s["stop"] - s["start"]) + self.image_shape
            if arr.shape != want or arr.dtype != np.uint8:
                raise InputError(f"smoothed store {self.root}: {s['file']} is {arr.dtype} "
                                 f"{arr.shape}, expected uint8 {want}")
            self._maps[k] = arr
        return self._maps[k]

    def level_index(self, level: float) -> int:
        """Position of ``level`` in :attr:`levels`."""
        for i, v in enumerate(self.levels):
            if abs(v - float(level)) < 1e-9:
                return i
        raise InputError(f"sparsity {level} is not one of the stored levels {list(self.levels)}")

    def _locate(self, i: int) -> tuple[int, int]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"image {i} out of range for a store of {n} images")
        i %= n
        k = int(np.searchsorted(self._starts, i, side="right")) - 1
        return k, i - int(self._starts[k])

    def __getitem__(self, i: int) -> tuple[np.ndarray, Any]:
        k, j = self._locate(int(i))
        target = None if self.targets is None else int(self.targets[int(i) % len(self)])
        return self.shard(k)[:, j], target

    def take(self, indices: Any, level: float) -> np.ndarray:
        """``uint8 (B, H, W, C)``: images ``indices`` at ``level`` (only their shards are read)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices out of range for a store of {len(self)} images")
        lv = self.level_index(level)
        out = np.empty((idx.size,) + self.image_shape, np.uint8)
        where = np.searchsorted(self._starts, idx, side="right") - 1
        for k in np.unique(where):
            sel = where == k
            out[sel] = self.shard(int(k))[lv, idx[sel] - self._starts[k]]
        return out

    def at(self, level: float) -> np.ndarray:
        """``uint8 (N, H, W, C)``: every image at ``level`` (a view when there is one shard, else
        read into memory)."""
        lv = self.level_index(level)
        if len(self.shards) == 1:
            return self.shard(0)[lv]
        return np.concatenate([self.shard(k)[lv] for k in range(len(self.shards))])

    def damaged(self) -> list[str]:
        """The shard files that are missing or whose SHA-256 differs from the manifest's."""
        bad = []
        for s in self.shards:
            path = self.root / s["file"]
            if not path.is_file() or file_sha256(path) != s["sha256"]:
                bad.append(s["file"])
        return bad


def open_smoothed(path: str | os.PathLike, *, verify: bool = False) -> SmoothedStore:
    """Open the smoothed store in ``path`` (written by ``virolbi smooth-dataset`` or
    :func:`virolbi.store.build_store`, or a smoothed-cache entry) read-only.

    Parameters
    ----------
    path : path-like
        The store's folder.
    verify : bool
        Check every shard's SHA-256 against the manifest first (reads the whole store).

    Returns
    -------
    SmoothedStore

    Examples
    --------
    >>> import tempfile
    >>> from virolbi.store import build_store
    >>> imgs = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    >>> d = tempfile.mkdtemp()
    >>> _ = build_store(imgs, d, [0.5, 1.0], shard_size=2, workers=1, progress=False)
    >>> store = open_smoothed(d)
    >>> len(store), store.levels, store[4][0].shape, len(store.shards)
    (5, (0.5, 1.0), (2, 8, 8, 3), 3)
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise InputError(f"smoothed store not found: {root}")
    manifest = read_manifest(root)
    if manifest is None:
        raise InputError(f"{root} is not a smoothed store (no manifest.json); write one with "
                         "virolbi smooth-dataset")
    todo = [s["file"] for s in manifest["shards"] if not s.get("sha256")]
    if not manifest.get("complete") or todo:
        raise InputError(f"smoothed store {root} is incomplete ({len(todo)} of "
                         f"{len(manifest['shards'])} shards missing); rerun virolbi "
                         "smooth-dataset on it to finish it")
    store = SmoothedStore(root, manifest)
    bad = store.damaged() if verify else [s["file"] for s in store.shards
                                          if not (root / s["file"]).is_file()]
    if bad:
        raise InputError(f"smoothed store {root}: {', '.join(bad[:3])} missing or damaged; "
                         "rerun virolbi smooth-dataset on it to recompute")
    return store
