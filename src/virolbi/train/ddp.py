"""Multi-process data-parallel training under ``torchrun`` (DDP).

``torchrun --nproc_per_node=N -m virolbi.cli train --config ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and joins
the process group (gloo on CPU, nccl on CUDA). Every global batch is cut into ``N`` contiguous
shards (:func:`shard`), one per process, so the run sees the same global batches as one process;
metrics are summed over processes (:func:`all_reduce_sum`) and only rank 0 writes files.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from virolbi.errors import InputError

__all__ = ["DistInfo", "init_distributed", "shard", "all_reduce_sum", "barrier", "cleanup",
           "wrap_model", "unwrap_model"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str = "auto", *, use_cuda: bool | None = None,
                     timeout_minutes: float = 360) -> DistInfo:
    """Join the process group described by the ``torchrun`` environment, if any.

    Without ``WORLD_SIZE`` (or with 1) this is a single process: nothing is initialised. If a
    group already exists it is used as is (and left alone by :func:`cleanup`).

    Examples
    --------
    >>> init_distributed().world_size if "WORLD_SIZE" not in os.environ else 1
    1
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", 0)), dist.get_backend(), False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise InputError(f"WORLD_SIZE={world} but {var} is not set: launch with torchrun")
    if use_cuda is None:
        use_cuda = torch.cuda.is_available()
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, backend, True)


def shard(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This process's contiguous part of a global batch (sizes differ by at most one).

    Examples
    --------
    >>> [shard(torch.arange(5), r, 2).tolist() for r in range(2)]
    [[0, 1, 2], [3, 4]]
    """
    return torch.tensor_split(indices, world_size)[rank]


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``t`` over processes (a copy; ``t`` itself when single-process)."""
    if not info.distributed:
        return t
    out = t.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op in a single process)."""
    if info.distributed:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, info: DistInfo, device: torch.device,
               sync_batchnorm: bool = True) -> torch.nn.Module:
    """DDP-wrap ``model`` (SyncBatchNorm on CUDA when asked; PyTorch has none on CPU)."""
    if not info.distributed:
        return model
    if sync_batchnorm and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
