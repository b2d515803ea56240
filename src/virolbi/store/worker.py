"""One unit of work: the image paths of the images of one shard (what every engine runs).

:func:`smooth_shard` is a plain function of a picklable :class:`ShardTask`, so a process pool, a
Ray task or the calling process can run it; it returns the shard's array and writes nothing (the
driver writes, checks and records every shard, :mod:`virolbi.store.build`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from virolbi.errors import InputError, UnreachedLevel, UnreachedLevelWarning
from virolbi.smoother import image_path
from virolbi.store.source import shard_images

__all__ = ["ShardTask", "smooth_shard"]


@dataclass(frozen=True)
class ShardTask:
    """The images of shard ``index`` (``start:stop`` of the source) and how to smooth them.

    Attributes
    ----------
    images : ndarray or dataset
        :func:`virolbi.store.source.shard_part` of the source.
    levels : tuple of float
    params : dict
        Options of the path function (``kappa``, ``nu``, ``group``, ``solver``, ...).
    path_fn : callable or None
        ``path_fn(x uint8 (B, C, H, W), levels, **params) -> uint8 (L, B, C, H, W)``;
        None is :func:`virolbi.image_path`.
    batch_size : int
        Images per path-function call.
    one_thread : bool
        Run torch with one thread (a worker among others on the same cores); False keeps the
        caller's setting (the smoother then spreads a batch over its threads).
    device : str
        ``"cpu"`` or ``"cuda"`` (a GPU worker).
    """

    index: int
    start: int
    stop: int
    images: Any = field(repr=False)
    levels: tuple[float, ...]
    params: dict[str, Any]
    path_fn: Any = None
    batch_size: int = 16
    one_thread: bool = True
    device: str = "cpu"


def _run_path(task: ShardTask, x: np.ndarray) -> np.ndarray:
    """``path_fn`` on one batch ``uint8 (B, C, H, W)``: ``uint8 (L, B, C, H, W)``, checked."""
    fn = image_path if task.path_fn is None else task.path_fn
    arg: Any = x if task.device == "cpu" else torch.from_numpy(x).to(task.device)
    res = fn(arg, task.levels, **task.params)
    res = res.cpu().numpy() if isinstance(res, torch.Tensor) else np.asarray(res)
    want = (len(task.levels),) + x.shape
    if res.shape != want or res.dtype != np.uint8:
        raise InputError(f"path function returned {res.dtype} {res.shape}, expected uint8 {want}")
    return res


def smooth_shard(task: ShardTask) -> tuple[int, np.ndarray, float, list[UnreachedLevel]]:
    """Smooth one shard: ``(index, uint8 (L, n, H, W, C), seconds, unreached)``, one image-path
    run per image (all levels in one run), in batches of ``task.batch_size``. ``unreached`` holds
    the (image, level) pairs the path could not reach (image = index in the source), caught here
    so that the driver, not a worker's stderr, reports them."""
    t0 = time.perf_counter()
    before = torch.get_num_threads()
    if task.one_thread:
        torch.set_num_threads(1)
    unreached: list[UnreachedLevel] = []
    try:
        x = shard_images(task.images, 0, task.stop - task.start)
        n, c, h, w = x.shape
        out = np.empty((len(task.levels), n, h, w, c), np.uint8)
        for s in range(0, n, task.batch_size):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UnreachedLevelWarning)
                res = _run_path(task, x[s:s + task.batch_size])
            out[:, s:s + task.batch_size] = res.transpose(0, 1, 3, 4, 2)
            unreached += _offset(caught, task.start + s)
    finally:
        torch.set_num_threads(before)
    return task.index, out, time.perf_counter() - t0, unreached


def _offset(caught: list, first: int) -> list[UnreachedLevel]:
    """The unreached records of a batch starting at image ``first``, with source indices; any
    other warning is passed on."""
    out = []
    for w in caught:
        if isinstance(w.message, UnreachedLevelWarning):
            out += [UnreachedLevel(first + r.image, r.level, r.sparsity, r.iterations, r.reason)
                    for r in w.message.records]
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return out
