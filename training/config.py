"""One pydantic model for a fine-tuning run, loaded from YAML plus trl-style `key=value` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator


class LoraSettings(BaseModel):
    """LoRA hyper-parameters; defaults give 921,600 trainable parameters on SmolLM2-135M."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class TrainConfig(BaseModel):
    """Everything that determines a run. All fields except `output_dir`, `checkpoint_every`, `max_pass_tokens`
    (same gradient either way) and `parallel` (how the work is spread, not what is learnt) enter the adapter's
    version hash, so the same base, data and hyper-parameters give the same version id."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = Field("smollm2-135m-instruct", description="Registry reference `name[:version]`.")
    dataset: Path = Field(..., description="JSONL file: chat `messages` or alpaca `instruction/input/output`.")
    adapter_name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9._-]*$", description="Registry name of the adapter.")
    output_dir: Path | None = Field(None, description="Where adapter, checkpoints and reports go; runs/<name>.")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    learning_rate: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(0, ge=0)
    epochs: int = Field(1, gt=0)
    max_steps: int | None = Field(None, gt=0, description="Optimizer steps; overrides `epochs` when set.")
    batch_size: int = Field(
        4,
        gt=0,
        description="Micro-batch size: per process in one process and under ddp; the global micro-batch "
        "under fsdp, split evenly across the processes (so a world size must divide it).",
    )
    grad_accumulation: int = Field(1, gt=0)
    max_pass_tokens: PositiveInt | Literal["auto"] | None = Field(
        "auto",
        description="Padded tokens per forward/backward pass: a larger micro-batch runs as several passes with "
        "the same loss and gradient, so activation memory stays bounded by this instead of the batch. `auto`: "
        "512 on a CPU (where that many tokens already keep the matmuls busy), one pass per micro-batch on a GPU; "
        "null: always one pass.",
    )
    max_seq_len: int = Field(512, gt=8)
    truncation_side: Literal["left", "right"] = "right"
    seed: int = 42
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="`auto`: bf16 autocast where the hardware has fast bf16 matmuls (CUDA, CPUs with AMX), else "
        "fp32. Measured on an AMD EPYC without AMX: bf16 autocast made LoRA steps several times slower than fp32.",
    )
    parallel: Literal["auto", "none", "ddp", "fsdp"] = Field(
        "auto",
        description="`auto`: `none` in one process, `ddp` under torchrun. `ddp`: every process holds the whole "
        "model; `fsdp`: the base's decoder layers and embeddings are sharded across the torchrun world (FSDP2).",
    )
    checkpoint_every: int = Field(50, gt=0, description="Optimizer steps between resumable checkpoints.")
    sample_prompts: list[str] = Field(
        default_factory=list, description="Prompts generated before/after; the first 3 eval prompts when empty."
    )
    sample_max_new_tokens: int = Field(48, gt=0)

    @model_validator(mode="after")
    def _default_output_dir(self) -> TrainConfig:
        if self.output_dir is None:
            self.output_dir = Path("runs") / self.adapter_name
        return self

    @property
    def out(self) -> Path:
        """`output_dir`, never None after validation (typed for callers)."""
        assert self.output_dir is not None
        return self.output_dir

    def identity(self) -> dict[str, Any]:
        """The fields that define what gets trained (not where it is written or how often it is saved)."""
        return self.model_dump(
            mode="json", exclude={"output_dir", "checkpoint_every", "dataset", "max_pass_tokens", "parallel"}
        )  # fmt: skip


def parse_override(item: str) -> tuple[list[str], Any]:
    """`lora.r=16` -> (["lora", "r"], 16); values are YAML so numbers, booleans and lists keep their type."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ValueError(f"override {item!r} is not key=value")
    return key.split("."), yaml.safe_load(raw)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        keys, value = parse_override(item)
        node = values
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {key} is not a section")
        node[keys[-1]] = value
    return values


def load_config(path: Path, overrides: list[str] | None = None) -> TrainConfig:
    """YAML file then overrides. A relative `dataset` in the file is relative to the file, so an example
    config works from any working directory; overrides are taken as given (relative to the cwd)."""
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    if "dataset" in values and not Path(values["dataset"]).is_absolute():
        values["dataset"] = str((path.parent / values["dataset"]).resolve())
    return TrainConfig(**apply_overrides(values, overrides or []))
