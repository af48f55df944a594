"""FSDP2 (`fully_shard`) for LoRA training: each decoder layer of the base is one shard unit and the loss module
holding the whole model is the root (embeddings, final norm, a tied head), so every frozen weight is split across
the world and only the small LoRA gradients are reduce-scattered. Frozen and trainable parameters share units:
FSDP2 shards them alike and gives gradients only to those that require them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft import PeftModel
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from training.distributed import Dist


class ShardingError(ValueError):
    """A model FSDP cannot be applied to the way this module does it; the message names the model class."""


def decoder_layers(model: PeftModel) -> list[torch.nn.Module]:
    """The repeated blocks, found the way transformers marks them for device placement (`_no_split_modules`)."""
    base = model.get_base_model()
    names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [module for module in base.modules() if type(module).__name__ in names]
    if not layers:
        raise ShardingError(
            f"cannot shard {type(base).__name__} with parallel: fsdp: none of its modules is a decoder layer "
            f"(`_no_split_modules`: {sorted(names) or 'empty'})"
        )
    return layers


def shard(objective: torch.nn.Module, model: PeftModel, ctx: Dist) -> FSDPModule:
    """Shards in place across the whole world and returns `objective`, now the FSDP root. `model` must be
    inside `objective` and identical on every rank (same base, same seeded LoRA init): each rank keeps its
    own slice of its own copy."""
    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    return fully_shard(objective, mesh=mesh)


@contextmanager
def gathered_root(root: FSDPModule) -> Iterator[None]:
    """The root's own weights (embeddings, norm, head) whole while code calls the PeftModel directly
    (evaluation, `generate`), bypassing the root's forward; the layers gather theirs as they run. Collective:
    every rank runs the same calls."""
    root.unshard()
    try:
        yield
    finally:
        root.reshard()


def full_adapter_state(model: PeftModel) -> dict[str, torch.Tensor]:
    """Collective: the trainable (LoRA) weights gathered whole onto rank 0's CPU; other ranks get `{}`."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    return get_model_state_dict(model, options=options)


def local_parameter_bytes(module: torch.nn.Module) -> int:
    """Bytes of parameters this process holds: its shard of a DTensor, all of a plain tensor."""
    total = 0
    for param in module.parameters():
        local = param.to_local() if isinstance(param, DTensor) else param
        total += local.numel() * local.element_size()
    return total
