from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from training.data import IGNORE_INDEX, DatasetError, file_sha256, load_conversations, split, tokenize


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
