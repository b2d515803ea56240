"""The ``local`` engine: shards run in the calling process or in a pool of processes.

``workers=1`` runs every shard here, one after the other; more run them in a
:class:`concurrent.futures.ProcessPoolExecutor` of that many processes (``spawn``: a fresh
interpreter, no forked torch state), each with one torch thread. Results are handed to
``on_done`` as they finish, in any order. The ``ray`` engine is :mod:`virolbi.store.ray_engine`.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Sequence

from virolbi.store.worker import ShardTask, smooth_shard

__all__ = ["default_workers", "run_local", "OnDone"]

OnDone = Callable[[tuple], None]


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def run_local(tasks: Sequence[ShardTask], on_done: OnDone, workers: int) -> None:
    """Run ``tasks`` on ``workers`` processes (1: in this process); ``on_done(result)`` for each
    :func:`~virolbi.store.worker.smooth_shard` result as it comes. On any error or interrupt the
    shards not started are cancelled and the error propagates."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            on_done(smooth_shard(task))
        return
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx,
                               initializer=_one_thread)
    try:
        futures = [pool.submit(smooth_shard, task) for task in tasks]
        for fut in as_completed(futures):
            on_done(fut.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
