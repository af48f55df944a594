from __future__ import annotations

import os

import pytest
import torch
import torch.multiprocessing as mp

from serving.backends.ports import free_port_block
from training import distributed

TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def test_a_plain_launch_is_a_world_of_one_without_a_process_group(monkeypatch: pytest.MonkeyPatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    ctx = distributed.setup()
    assert (ctx.rank, ctx.world_size, ctx.device.type) == (0, 1, "cpu") and ctx.is_main
    assert not torch.distributed.is_initialized()
    ctx.barrier()  # nothing to wait for
    assert distributed.mean_across(2.5, ctx) == 2.5


def _rank_main(rank: int, port: int, results: dict) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    ctx = distributed.setup()
    results[rank] = (ctx.is_main, distributed.mean_across(float(rank + 1), ctx))  # ranks see 1.0 and 2.0
    ctx.barrier()
    distributed.teardown()


def test_two_ranks_over_gloo_average_the_loss_and_only_rank_0_is_main():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank_main, args=(free_port_block(), results), nprocs=2, join=True)
        assert dict(results) == {0: (True, 1.5), 1: (False, 1.5)}


@pytest.mark.parametrize(
    ("requested", "world", "resolved"),
    [("auto", 1, "none"), ("auto", 2, "ddp"), ("ddp", 1, "ddp"), ("ddp", 4, "ddp"), ("fsdp", 2, "fsdp"),
     ("none", 1, "none")],
)  # fmt: skip
def test_parallel_auto_is_ddp_under_torchrun_and_none_alone(requested, world, resolved):
    assert distributed.resolve(requested, world) == resolved


def test_fsdp_without_a_distributed_world_names_torchrun(monkeypatch: pytest.MonkeyPatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(distributed.ParallelError, match=r"parallel: fsdp .* world of 1: launch it with torchrun"):
        distributed.setup("fsdp")
    assert not torch.distributed.is_initialized()
    with pytest.raises(distributed.ParallelError, match=r"parallel: none .* torchrun started 2: use ddp or fsdp"):
        distributed.resolve("none", 2)
