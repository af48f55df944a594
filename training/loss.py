"""The causal-LM loss computed only where it counts: the LM head runs on the positions whose next token is an
assistant token, not on every position of the padded batch.

A causal LM's own forward projects every position onto the whole vocabulary (49,152 logits per token for
SmolLM2) and then ignores the prompt and padding positions in the loss. With loss on assistant tokens only, most
of those projections, their softmax and the memory they hold are waste: on the pirate example ~38 % of a batch's
positions carry a label. Models whose head does more than a linear projection (logit soft-capping, scaling) are
caught by `agrees_with_model` on the first batch, and the trainer then falls back to the model's own loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft import PeftModel

from training.data import IGNORE_INDEX


class AssistantTokenLoss(torch.nn.Module):
    """Mean next-token cross-entropy over labelled positions, as the model's own loss defines it; with
    `num_items_in_batch` (transformers' name), the sum divided by it: a part of a larger batch's mean."""

    def __init__(self, model: PeftModel) -> None:
        super().__init__()
        self.model = model
        causal_lm = model.get_base_model()
        self.body = causal_lm.get_decoder()
        self.head = causal_lm.get_output_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        num_items_in_batch: int | None = None,
    ) -> torch.Tensor:
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        logits = self.head(hidden[:, :-1][keep])
        if num_items_in_batch is None:
            return F.cross_entropy(logits.float(), targets[keep])
        return F.cross_entropy(logits.float(), targets[keep], reduction="sum") / num_items_in_batch


class ModelLoss(torch.nn.Module):
    """The model's own loss, logits at every position: the fallback for heads that are not a plain projection."""

    def __init__(self, model: PeftModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, num_items_in_batch: int | None = None, **batch: torch.Tensor) -> torch.Tensor:
        return self.model(**batch, use_cache=False, num_items_in_batch=num_items_in_batch).loss


def choose(model: PeftModel, sample: dict[str, torch.Tensor]) -> AssistantTokenLoss | ModelLoss:
    """The fast loss when it reproduces the model's own on a sample batch, else the model's own."""
    fast = AssistantTokenLoss(model)
    return fast if agrees_with_model(fast, sample) else ModelLoss(model)


def agrees_with_model(loss: AssistantTokenLoss, batch: dict[str, torch.Tensor]) -> bool:
    """True when the fast loss equals the model's own on this batch (checked once, before training, in fp32
    and eval mode so that dropout draws no different masks)."""
    was_training = loss.training
    loss.eval()
    with torch.no_grad():
        fast, full = loss(**batch), ModelLoss(loss.model)(**batch)
    loss.train(was_training)
    return bool(torch.isclose(fast, full, rtol=1e-4, atol=1e-5))
