"""The labelled-positions loss against the model's own, on a tiny randomly initialised Llama."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from training.data import IGNORE_INDEX, labelled_tokens, split_for_passes
from training.loss import AssistantTokenLoss, ModelLoss, agrees_with_model, choose


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    """Two rows, the second padded; labels only on the last tokens of each row (the assistant's)."""
    ids = torch.randint(0, 97, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 7:] = ids[0, 7:]
    labels[1, 5:9] = ids[1, 5:9]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_equals_the_model_loss_and_its_gradients(peft_model, batch):
    fast, full = AssistantTokenLoss(peft_model), ModelLoss(peft_model)

    def grads(objective: torch.nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
        peft_model.zero_grad(set_to_none=True)
        value = objective(**batch)
        value.backward()
        return value.detach(), [p.grad.clone() for p in peft_model.parameters() if p.requires_grad]

    fast_value, fast_grads = grads(fast)
    full_value, full_grads = grads(full)
    torch.testing.assert_close(fast_value, full_value, rtol=1e-5, atol=1e-6)
    assert fast_grads and all(g.abs().sum() > 0 for g in full_grads[1::2]), "LoRA B matrices got no gradient"
    for mine, theirs in zip(fast_grads, full_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("objective", [AssistantTokenLoss, ModelLoss])
def test_passes_weighted_by_labelled_tokens_give_the_whole_batch_gradient(peft_model, batch, objective):
    loss = objective(peft_model)

    def grads(parts: list[dict[str, torch.Tensor]], total: int | None) -> tuple[float, list[torch.Tensor]]:
        peft_model.zero_grad(set_to_none=True)
        value = 0.0
        for part in parts:
            part_loss = loss(**part, num_items_in_batch=total)
            part_loss.backward()
            value += part_loss.item()
        return value, [p.grad.clone() for p in peft_model.parameters() if p.requires_grad]

    passes = split_for_passes(batch, 12)
    assert len(passes) == 2
    split_value, split_grads = grads(passes, labelled_tokens(batch))
    whole_value, whole_grads = grads([batch], None)
    assert split_value == pytest.approx(whole_value, rel=1e-5)
    for mine, theirs in zip(split_grads, whole_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


def test_choose_takes_the_fast_loss_when_it_agrees(peft_model, batch):
    assert agrees_with_model(AssistantTokenLoss(peft_model), batch)
    assert isinstance(choose(peft_model, batch), AssistantTokenLoss)


def test_choose_falls_back_when_the_head_is_not_a_plain_projection(peft_model, batch):
    """Like Cohere's logit_scale or Gemma's soft-capping: the model's forward changes the logits after the head."""
    causal_lm = peft_model.get_base_model()
    plain_forward = causal_lm.forward

    def scaled_forward(*args: Any, labels: torch.Tensor | None = None, **kwargs: Any) -> Any:
        out = plain_forward(*args, **kwargs)
        out.logits = out.logits * 3.0
        out.loss = causal_lm.loss_function(logits=out.logits, labels=labels, vocab_size=97)
        return out

    causal_lm.forward = scaled_forward
    chosen = choose(peft_model, batch)
    assert isinstance(chosen, ModelLoss)
    assert chosen.training, "the check must leave the model in training mode"
