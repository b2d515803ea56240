r"""Writing a smoothed store: :func:`build_store`, resumable, safe and spread over workers.

Every image gets one image-path run (:func:`virolbi.image_path`: the LBI iteration of Eq. 5–8
with ũ projected as in Eq. 6 / Prop. 1 each time the path crosses a level), all levels in one run;
images are grouped in shards of ``shard_size`` and each shard is one task for an engine
(``local``: :mod:`virolbi.store.engines`; ``ray``: :mod:`virolbi.store.ray_engine`).

Only this driver writes: a shard's file is written atomically (a temporary renamed into place),
then its SHA-256 is recorded in ``manifest.json`` (also written atomically), so

- a killed run loses at most the shards in flight, and its rerun skips every recorded shard
  whose checksum still matches and recomputes the others (a damaged or missing one with a
  :class:`StoreRepairWarning`);
- a second run on the same folder is refused (an ``flock`` on the folder) or, with ``wait``,
  waits for the first;
- a folder holding a store of another source, levels, parameters or code is refused.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from virolbi.checks import check_levels, check_positive_int
from virolbi.data.cache import file_sha256
from virolbi.errors import InputError, warn_unreached
from virolbi.io import atomic_path, locked_output_dir, save_json
from virolbi.store.engines import default_workers, run_local
from virolbi.store.manifest import (MANIFEST, TARGETS, fn_name, mismatch, new_manifest,
                                    read_manifest)
from virolbi.store.reader import SmoothedStore, open_smoothed
from virolbi.store.source import as_source, shard_part, source_summary
from virolbi.store.worker import ShardTask

__all__ = ["ENGINES", "BuildReport", "StoreRepairWarning", "build_store"]

ENGINES = ("local", "ray")


class StoreRepairWarning(UserWarning):
    """A finished shard was missing or damaged (checksum mismatch) and is being recomputed."""


@dataclass(frozen=True)
class BuildReport:
    """What :func:`build_store` did: the store, shards computed now and found done, seconds."""

    store: SmoothedStore
    computed: int
    skipped: int
    seconds: float


def _resume(out: Path, wanted: dict[str, Any], verify: bool) -> dict[str, Any]:
    """The manifest to continue: ``wanted`` for a new folder, else the stored one with every
    shard whose file is missing or (``verify``) damaged marked to do again, with a warning."""
    old = read_manifest(out)
    if old is None:
        return wanted
    why = mismatch(old, wanted)
    if why is not None:
        raise InputError(f"{out} holds a smoothed store of another run ({why} differs); choose "
                         f"another output folder or remove that one")
    for s in old["shards"]:
        if not s.get("sha256"):
            continue
        path = out / s["file"]
        problem = ("is missing" if not path.is_file() else
                   "is damaged (checksum mismatch)" if verify and file_sha256(path) != s["sha256"]
                   else None)
        if problem:
            warnings.warn(f"smoothed store {out}: {s['file']} {problem}; recomputing it",
                          StoreRepairWarning, stacklevel=3)
            s["sha256"] = None
    old["complete"] = all(s.get("sha256") for s in old["shards"])
    return old


def _write_targets(source: Any, out: Path, manifest: dict[str, Any]) -> None:
    """``targets.npy`` (int64 labels) when the source has labels and it is not written yet."""
    targets = getattr(source, "targets", None)
    if targets is None or manifest.get("targets"):
        return
    with atomic_path(out / TARGETS) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.asarray(targets, dtype=np.int64))
    manifest["targets"] = True


class _ShardWriter:
    """``on_done`` of the engines: writes a finished shard, records its checksum, moves the bar."""

    def __init__(self, out: Path, manifest: dict[str, Any], bar: Any) -> None:
        self.out, self.manifest, self.bar, self.count = out, manifest, bar, 0
        self.unreached: list = []

    def __call__(self, result: tuple) -> None:
        index, arr, _seconds, unreached = result
        self.unreached += unreached
        record = self.manifest["shards"][index]
        with atomic_path(self.out / record["file"]) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(arr))
            digest = file_sha256(tmp)
        record["sha256"], record["unreached"] = digest, len(unreached)
        save_json(self.manifest, self.out / MANIFEST, indent=1)
        self.count += 1
        self.bar.update(record["stop"] - record["start"])


def _tasks(source: Any, manifest: dict[str, Any], params: dict[str, Any], path_fn: Any,
           batch_size: int, one_thread: bool, device: str) -> list[ShardTask]:
    levels = tuple(manifest["levels"])
    return [ShardTask(i, s["start"], s["stop"], shard_part(source, s["start"], s["stop"]),
                      levels, dict(params), path_fn, batch_size, one_thread, device)
            for i, s in enumerate(manifest["shards"]) if not s.get("sha256")]


def _run(engine: str, tasks: list[ShardTask], writer: _ShardWriter, workers: int,
         address: str | None, gpus_per_task: float) -> None:
    if engine == "ray":
        from virolbi.store.ray_engine import run_ray  # Ray is imported only by this engine

        run_ray(tasks, writer, workers, address, gpus_per_task)
    else:
        run_local(tasks, writer, workers)


def _check_options(engine: str, workers: int | None, shard_size: int, batch_size: int,
                   address: str | None, gpus_per_task: float) -> int:
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if address is not None and engine != "ray":
        raise InputError("an address is a Ray cluster's: use it with engine 'ray'")
    if gpus_per_task and engine != "ray":
        raise InputError("GPU workers are Ray tasks: use gpus_per_task with engine 'ray'")
    if not 0 <= float(gpus_per_task) <= 1e6:
        raise InputError(f"gpus_per_task must be >= 0, got {gpus_per_task}")
    check_positive_int(shard_size, "shard_size")
    check_positive_int(batch_size, "batch_size")
    return default_workers() if workers is None else check_positive_int(workers, "workers")


def build_store(source: Any, output_dir: str | os.PathLike, levels: Sequence[float] | float, *,
                engine: str = "local", workers: int | None = None, address: str | None = None,
                shard_size: int = 1024, batch_size: int = 16, path_fn: Any = None,
                params: dict[str, Any] | None = None, identity: str | None = None,
                description: str = "", progress: bool | None = None, gpus_per_task: float = 0.0,
                one_thread: bool = True, verify: bool = True, wait: bool = False,
                code_version: int | None = None) -> BuildReport:
    r"""Smooth every image of ``source`` at every level into a store in ``output_dir``.

    One image-path run per image (paper Eq. 5–8, ũ by Prop. 1 at each level), shards of
    ``shard_size`` images run by ``engine``; a rerun continues an interrupted or damaged store.
    Images that could not reach a level are recorded where they stopped, as
    :func:`virolbi.image_path` does, and named in one :class:`~virolbi.UnreachedLevelWarning`
    (images of the shards computed by this call; the manifest counts them per shard).

    Parameters
    ----------
    source : dataset or ndarray
        What :func:`virolbi.data.load_dataset` returns, or ``uint8 (N, H, W, C)``.
    output_dir : path-like
        The store's folder (created).
    levels : float or sequence of float
        Sparsity levels in (0, 1], stored increasing.
    engine : {"local", "ray"}
        ``local``: ``workers`` processes here (1: this process); ``ray``: Ray tasks.
    workers : int, optional
        Processes (local) or CPUs of the local Ray instance; default: the cores.
    address : str, optional
        Ray cluster to join (``ray`` only); None starts a local instance.
    shard_size : int
        Images per shard (and per task).
    batch_size : int
        Images per path-function call inside a task.
    path_fn : callable, optional
        Replacement of :func:`virolbi.image_path` (its name is recorded).
    params : dict, optional
        Smoother options (``kappa``, ``nu``, ``group``, ``solver``, ...).
    identity : str, optional
        The source's identity (default :func:`virolbi.store.source.source_identity`).
    description : str
        How the source was named (recorded).
    progress : bool, optional
        A bar over images with an ETA (None: only on a terminal).
    gpus_per_task : float
        ``ray``: GPUs per task (> 0: workers smooth on CUDA).
    one_thread : bool
        Each task runs torch with one thread (False: the smoother's own threads, for one task at
        a time in this process).
    verify : bool
        Check the checksum of every finished shard before skipping it.
    wait : bool
        Wait for another run on the same folder to finish instead of refusing.
    code_version : int, optional
        The smoothing code's version to record (default
        :data:`~virolbi.store.manifest.SMOOTHER_CODE_VERSION`).

    Returns
    -------
    BuildReport
    """
    from tqdm.auto import tqdm

    workers = _check_options(engine, workers, shard_size, batch_size, address, gpus_per_task)
    source, levels = as_source(source), check_levels(levels, "levels")
    wanted = new_manifest(source_summary(source, identity, description), levels, params or {},
                          fn_name(path_fn), shard_size, code_version)
    t0 = time.perf_counter()
    with locked_output_dir(output_dir, "output folder", wait=wait) as out:
        manifest = _resume(Path(out), wanted, verify)
        _write_targets(source, out, manifest)
        tasks = _tasks(source, manifest, params or {}, path_fn, batch_size, one_thread,
                       "cuda" if gpus_per_task else "cpu")
        n, done = len(source), sum(s["stop"] - s["start"] for s in manifest["shards"]
                                   if s.get("sha256"))
        if tasks or not manifest["complete"] or not (out / MANIFEST).is_file():
            manifest["complete"] = False
            save_json(manifest, out / MANIFEST, indent=1)
        bar = tqdm(total=n, initial=done, unit="img", leave=False, smoothing=0.1,
                   desc=f"smoothing {n} images at {len(levels)} levels",
                   disable=None if progress is None else not progress)
        writer = _ShardWriter(out, manifest, bar)
        try:
            _run(engine, tasks, writer, workers, address, gpus_per_task)
        finally:
            bar.close()
        if not manifest["complete"]:
            manifest["complete"] = True
            save_json(manifest, out / MANIFEST, indent=1)
        store = open_smoothed(out)
    if writer.unreached:
        warn_unreached(sorted(writer.unreached, key=lambda r: (r.image, r.level)))
    return BuildReport(store, writer.count, len(manifest["shards"]) - writer.count,
                       time.perf_counter() - t0)
