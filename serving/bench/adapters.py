"""Servable adapters without training: PEFT LoRA adapters with random (non-zero) weights load like trained
ones and visibly change answers, so they measure multi-LoRA serving cost as well as real ones."""

from __future__ import annotations

from pathlib import Path

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def build_random_adapter(
    base_path: Path, out: Path, rank: int, seed: int, target_modules: tuple[str, ...] = DEFAULT_TARGETS
) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_path)
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(target_modules), init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(out)
    return out
