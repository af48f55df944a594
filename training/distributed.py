"""Process-group set-up for `torchrun`: one process per device, gloo on CPU, nccl on CUDA, and which kind of
data parallelism (`parallel`) the run uses across them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.distributed as dist

Parallel = Literal["none", "ddp", "fsdp"]


class ParallelError(ValueError):
    """A `parallel` setting this launch cannot honour; the message says how to launch instead."""


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    device: torch.device
    parallel: Parallel = "none"

    @property
    def is_main(self) -> bool:
        """Only rank 0 writes files, so N processes never race on the output directory."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.parallel == "fsdp"

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def resolve(requested: str, world_size: int) -> Parallel:
    """`auto` as today (ddp under torchrun, none alone); a setting the world cannot run fails before any work."""
    if requested == "auto":
        return "ddp" if world_size > 1 else "none"
    if requested == "fsdp" and world_size < 2:
        raise ParallelError(
            f"parallel: fsdp shards the model across processes, but this is a world of {world_size}: launch it "
            "with torchrun, e.g. `torchrun --nproc_per_node 2 -m training CONFIG --base-path DIR --set parallel=fsdp`"
        )
    if requested == "none" and world_size > 1:
        raise ParallelError(f"parallel: none trains in one process, but torchrun started {world_size}: use ddp or fsdp")
    return cast(Parallel, requested)


def setup(parallel: str = "auto") -> Dist:
    """Reads the torchrun environment; a plain `python` launch is a world of one with no process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    mode = resolve(parallel, world_size)
    device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world_size, device, mode)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def mean_across(value: float, ctx: Dist) -> float:
    """The loss every rank saw, averaged, so the logged curve describes the whole global batch."""
    return sum_across(value, ctx) / ctx.world_size


def sum_across(value: float, ctx: Dist) -> float:
    if ctx.world_size == 1:
        return value
    tensor = torch.tensor([value], device=ctx.device, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.item()
