"""Before-vs-after evaluation of one adapter: held-out loss and perplexity, greedy sample answers, and the
training loss curve. "Before" is the same model with the adapter disabled, so it needs no second copy of
the base weights and works the same after a resume."""

from __future__ import annotations

import json
import math
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: training runs on servers and in CI
import matplotlib.pyplot as plt
import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from training.config import TrainConfig
from training.data import Example, Message, collate, labelled_tokens, split_for_passes
from training.trainer import autocast, pass_tokens

EVAL_FILE = "eval.json"
LOSS_PLOT = "loss.png"


@torch.no_grad()
def eval_loss(model: PeftModel, examples: list[Example], config: TrainConfig, pad_id: int) -> float | None:
    """Token-weighted mean loss over the held-out examples (None when there are none)."""
    if not examples:
        return None
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    budget = pass_tokens(config, device)  # the training passes' memory bound holds here too
    for start in range(0, len(examples), config.batch_size):
        for part in split_for_passes(collate(examples[start : start + config.batch_size], pad_id), budget):
            count = labelled_tokens(part)
            if count == 0:
                continue
            with autocast(config, device):
                total += model(**{k: v.to(device) for k, v in part.items()}).loss.item() * count
            tokens += count
    return total / tokens


@torch.no_grad()
def generate(model: PeftModel, tokenizer: PreTrainedTokenizerBase, prompt: str, max_new_tokens: int) -> str:
    """Greedy decoding, so before/after differences come from the weights and not from sampling."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(next(model.parameters()).device)
    output = model.generate(
        **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def sample_prompts(config: TrainConfig, eval_conversations: list[list[Message]]) -> list[str]:
    if config.sample_prompts:
        return config.sample_prompts[:3]
    firsts = (next((m["content"] for m in conv if m["role"] == "user"), None) for conv in eval_conversations)
    return [prompt for prompt in firsts if prompt][:3]


def _metrics(model: PeftModel, tokenizer: PreTrainedTokenizerBase, examples: list[Example], prompts: list[str],
             config: TrainConfig, adapter: bool) -> dict[str, Any]:  # fmt: skip
    context: AbstractContextManager[Any] = nullcontext() if adapter else model.disable_adapter()
    with context:
        loss = eval_loss(model, examples, config, tokenizer.pad_token_id or 0)
        samples = [generate(model, tokenizer, p, config.sample_max_new_tokens) for p in prompts]
    return {
        "eval_loss": loss,
        "perplexity": math.exp(loss) if loss is not None else None,
        "samples": [{"prompt": p, "answer": a} for p, a in zip(prompts, samples, strict=True)],
    }


def evaluate(model: PeftModel, tokenizer: PreTrainedTokenizerBase, examples: list[Example],
             eval_conversations: list[list[Message]], config: TrainConfig) -> dict[str, Any]:  # fmt: skip
    model.eval()
    prompts = sample_prompts(config, eval_conversations)
    return {
        "before": _metrics(model, tokenizer, examples, prompts, config, adapter=False),
        "after": _metrics(model, tokenizer, examples, prompts, config, adapter=True),
        "eval_examples": len(examples),
    }


def write_report(output_dir: Path, report: dict[str, Any], history: list[tuple[int, float]]) -> None:
    """eval.json (metrics and the full per-step loss history) and loss.png."""
    (output_dir / EVAL_FILE).write_text(json.dumps({**report, "train_loss": history}, indent=2))
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.plot([s for s, _ in history], [loss for _, loss in history], marker=".")
    for label, key in (("eval before", "before"), ("eval after", "after")):
        value = report[key]["eval_loss"]
        if value is not None:
            axes.axhline(value, linestyle="--", linewidth=1, label=f"{label} {value:.3f}")
    axes.set(xlabel="optimizer step", ylabel="loss", title="LoRA training loss")
    axes.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(output_dir / LOSS_PLOT, dpi=100)
    plt.close(figure)
