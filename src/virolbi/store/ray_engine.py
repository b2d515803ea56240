"""The ``ray`` engine: one Ray task per shard, on a local Ray instance or a cluster.

Ray is an optional extra (``pip install virolbi[ray]``) and is imported here only: importing it
costs about a second and starts nothing, but every other command would pay that second, and a
machine without the extra must still run everything else.

With no ``address`` a local instance is started with ``workers`` CPUs (and stopped at the end);
with one (``auto``, ``ray://host:10001`` or ``host:6379``) the run joins that cluster and its
tasks go wherever Ray places them. Each task asks for one CPU, or ``gpus_per_task`` of a GPU
(the worker then smooths on CUDA). At most twice as many tasks as there are CPUs are in flight
(Ray's ``ray.wait`` pattern for limiting pending tasks), so the driver never holds every shard's
input and output at once; results come back through Ray's object store to the driver, which
alone writes the store (workers need no shared file system).
"""

from __future__ import annotations

from typing import Sequence

from virolbi.errors import InputError
from virolbi.store.engines import OnDone
from virolbi.store.worker import ShardTask, smooth_shard

__all__ = ["run_ray"]


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--engine ray needs Ray: pip install 'virolbi[ray]'") from None
    return ray


def _connect(ray, address: str | None, workers: int) -> bool:
    """Start or join Ray; True if this call did (and so must shut it down)."""
    if ray.is_initialized():
        return False
    opts = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        if address is None:
            ray.init(num_cpus=workers, **opts)
        else:
            ray.init(address=address, **opts)
    except ConnectionError as exc:
        raise InputError(f"--address {address}: cannot join a Ray cluster there ({exc})") from None
    return True


def run_ray(tasks: Sequence[ShardTask], on_done: OnDone, workers: int, address: str | None = None,
            gpus_per_task: float = 0.0) -> None:
    """Run ``tasks`` as Ray tasks; ``on_done(result)`` in the driver for each as it finishes."""
    ray = _import_ray()
    started = _connect(ray, address, workers)
    try:
        remote = ray.remote(num_cpus=1, num_gpus=gpus_per_task, max_retries=2)(smooth_shard)
        window = 2 * max(1, int(ray.cluster_resources().get("CPU", workers)))
        todo, pending = list(tasks)[::-1], []
        while todo or pending:
            while todo and len(pending) < window:
                pending.append(remote.remote(todo.pop()))
            done, pending = ray.wait(pending, num_returns=1)
            on_done(ray.get(done[0]))
    finally:
        if started:
            ray.shutdown()
