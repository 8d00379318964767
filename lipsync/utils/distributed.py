"""torchrun / DistributedDataParallel plumbing: rank detection, process group, reductions.

A single process (no torchrun) is world size 1 and every helper degrades to a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the torchrun job described by RANK / WORLD_SIZE / LOCAL_RANK, if any.

    NCCL on CUDA, gloo on CPU. Each CUDA process uses the GPU of its local rank.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and world_size > 1:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values: dict[str, float], context: DistributedContext) -> dict[str, float]:
    """Average scalar metrics over ranks (every rank gets the result)."""
    if not context.is_distributed or not values:
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([float(values[key]) for key in keys], dtype=torch.float64,
                          device=context.device if context.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return {key: float(value) / context.world_size for key, value in zip(keys, tensor.tolist())}


def barrier(context: DistributedContext) -> None:
    if context.is_distributed:
        dist.barrier()
