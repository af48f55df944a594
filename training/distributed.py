"""Process-group set-up for `torchrun`: one process per device, gloo on CPU, nccl on CUDA."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files, so N processes never race on the output directory."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def setup() -> Dist:
    """Reads the torchrun environment; a plain `python` launch is a world of one with no process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world_size, device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def mean_across(value: float, ctx: Dist) -> float:
    """The loss every rank saw, averaged, so the logged curve describes the whole global batch."""
    if ctx.world_size == 1:
        return value
    tensor = torch.tensor([value], device=ctx.device)
    dist.all_reduce(tensor)
    return tensor.item() / ctx.world_size
