from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer

from training.data import (
    IGNORE_INDEX,
    DatasetError,
    Example,
    collate,
    file_sha256,
    labelled_tokens,
    load_conversations,
    split,
    split_for_passes,
    tokenize,
)


@pytest.fixture(scope="module")
def tokenizer(base_model):
    return AutoTokenizer.from_pretrained(base_model.path)


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"instruction": "hi", "output": "hello"})
    path.write_text(f"{good}\n\n{good}\n{{not json\n")
    with pytest.raises(DatasetError, match=r"bad\.jsonl:4:"):
        load_conversations(path)
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "only a question"}]}) + "\n")
    with pytest.raises(DatasetError, match=r"bad\.jsonl:1: no assistant"):
        load_conversations(path)


def test_alpaca_becomes_a_chat(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"instruction": "Add", "input": "1+1", "output": "2"}) + "\n")
    assert load_conversations(path) == [
        [{"role": "user", "content": "Add\n\n1+1"}, {"role": "assistant", "content": "2"}]
    ]
    assert file_sha256(path) == file_sha256(path) and len(file_sha256(path)) == 64


def test_labels_cover_only_assistant_tokens(tokenizer):
    messages = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Ahoy! Arr!"}]
    example = tokenize(messages, tokenizer, 512, "right")
    learned = [t for t, label in zip(example.input_ids, example.labels, strict=True) if label != IGNORE_INDEX]
    assert tokenizer.decode(learned) == "Ahoy! Arr!<|im_end|>\n"
    first_learned = next(i for i, label in enumerate(example.labels) if label != IGNORE_INDEX)
    assert all(label == IGNORE_INDEX for label in example.labels[:first_learned])
    assert "Say hi" in tokenizer.decode(example.input_ids[:first_learned])


def test_truncation_side(tokenizer):
    messages = [{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": "Arr!"}]
    left = tokenize(messages, tokenizer, 16, "left")
    right = tokenize(messages, tokenizer, 16, "right")
    assert len(left.input_ids) == len(right.input_ids) == 16
    assert any(label != IGNORE_INDEX for label in left.labels)
    assert all(label == IGNORE_INDEX for label in right.labels)


def test_split_is_deterministic_by_seed():
    items = list(range(100))
    first = split(items, 0.1, seed=1)
    assert first == split(items, 0.1, seed=1)
    assert first != split(items, 0.1, seed=2)
    train, evaluation = first
    assert len(evaluation) == 10 and sorted(train + evaluation) == items


def _batch(lengths: list[int]) -> dict[str, torch.Tensor]:
    """Rows whose token ids are their row number (so a chunk's rows can be identified), labelled past half."""
    examples = [
        Example([row + 1] * n, [IGNORE_INDEX] * (n // 2) + [row + 1] * (n - n // 2)) for row, n in enumerate(lengths)
    ]
    return collate(examples, pad_id=0)


@pytest.mark.parametrize("max_tokens", [7, 24, 40, 64])
def test_passes_cover_every_row_once_within_the_budget(max_tokens):
    batch = _batch([12, 3, 9, 12, 5, 1, 8])
    passes = split_for_passes(batch, max_tokens)
    rows = sorted(int(part["input_ids"][i, 0]) for part in passes for i in range(part["input_ids"].shape[0]))
    assert rows == list(range(1, 8))
    assert len(passes) > 1
    for part in passes:
        assert part["input_ids"].numel() <= max(max_tokens, 12), "a chunk over the budget (beyond one long row)"
        assert part["attention_mask"][:, -1].any(), "a chunk keeps padding its longest row does not need"
        for i in range(part["input_ids"].shape[0]):
            n = int(part["attention_mask"][i].sum())
            assert (part["input_ids"][i, :n] == part["input_ids"][i, 0]).all()
    assert sum(labelled_tokens(part) for part in passes) == labelled_tokens(batch)


def test_a_batch_within_the_budget_is_one_pass():
    batch = _batch([4, 6])
    assert split_for_passes(batch, 12) == [batch]
    assert split_for_passes(batch, None) == [batch]
