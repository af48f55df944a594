"""What FSDP needs before any process group exists: decoder layers to shard and a batch the world divides."""

from __future__ import annotations

import pytest
import torch

from tests.training.conftest import TINY
from training import sharding
from training.config import TrainConfig
from training.distributed import Dist, ParallelError
from training.trainer import process_batch

CPU = torch.device("cpu")


def test_decoder_layers_are_the_models_no_split_modules(peft_model):
    layers = sharding.decoder_layers(peft_model)
    assert [type(layer).__name__ for layer in layers] == ["LlamaDecoderLayer", "LlamaDecoderLayer"]
    assert layers[0] is peft_model.get_base_model().model.layers[0]


def test_a_model_without_known_layers_is_named_in_the_error(peft_model):
    peft_model.get_base_model()._no_split_modules = []  # as a model class that declares none
    with pytest.raises(sharding.ShardingError, match="cannot shard LlamaForCausalLM with parallel: fsdp"):
        sharding.decoder_layers(peft_model)


def test_fsdp_splits_the_global_batch_evenly_or_says_why_not():
    config = TrainConfig(**{**TINY, "batch_size": 6, "parallel": "fsdp"})
    assert process_batch(config, Dist(0, 2, CPU, "fsdp")) == 3
    assert process_batch(config, Dist(0, 3, CPU, "fsdp")) == 2
    assert process_batch(config, Dist(0, 4, CPU, "ddp")) == 6  # ddp: batch_size stays per process
    with pytest.raises(ParallelError, match="4 processes, and 4 does not divide 6: make batch_size a multiple"):
        process_batch(config, Dist(0, 4, CPU, "fsdp"))


def test_parallel_is_validated_and_not_part_of_the_version():
    base = TrainConfig(**TINY)
    assert base.parallel == "auto"
    assert TrainConfig(**{**TINY, "parallel": "fsdp"}).identity() == base.identity()
    with pytest.raises(ValueError, match="parallel"):
        TrainConfig(**{**TINY, "parallel": "zero3"})


def test_local_parameter_bytes_counts_whole_tensors_without_sharding(peft_model):
    expected = sum(p.numel() * p.element_size() for p in peft_model.parameters())
    assert sharding.local_parameter_bytes(peft_model) == expected
