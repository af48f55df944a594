"""Held-out loss: token-weighted over the examples, the same whether a batch runs in one pass or several."""

from __future__ import annotations

import pytest
import torch

from tests.training.conftest import TINY
from training.config import TrainConfig
from training.data import IGNORE_INDEX, Example
from training.evaluate import eval_loss


def test_eval_loss_is_the_same_in_one_pass_or_several(peft_model):
    torch.manual_seed(1)
    examples = [
        Example(ids, [IGNORE_INDEX] * (len(ids) // 2) + ids[len(ids) // 2 :])
        for ids in (torch.randint(1, 97, (n,)).tolist() for n in (12, 5, 9, 16, 7))
    ]
    peft_model.eval()
    whole = eval_loss(peft_model, examples, TrainConfig(**{**TINY, "batch_size": 4, "max_pass_tokens": None}), 0)
    passes = eval_loss(peft_model, examples, TrainConfig(**{**TINY, "batch_size": 4, "max_pass_tokens": 16}), 0)
    assert whole is not None and whole > 0
    assert passes == pytest.approx(whole, rel=1e-5)
    assert eval_loss(peft_model, [], TrainConfig(**TINY), 0) is None
