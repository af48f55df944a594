"""JSONL datasets -> tokenized examples whose loss covers only what the assistant says.

Two line formats: chat `{"messages": [{"role", "content"}, ...]}` and alpaca
`{"instruction", "input"?, "output"}`. Both are rendered with the base model's own chat template, so the
adapter learns the exact prompt format the serving engine will send."""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
Message = dict[str, str]


class DatasetError(ValueError):
    """A dataset line that cannot be used; the message names the file and the 1-based line number."""


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]


def file_sha256(path: Path) -> str:
    """Content hash of the data file: part of the adapter's version id and its manifest."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _to_messages(record: Any) -> list[Message]:
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError("`messages` must be a non-empty list")
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise ValueError("each message needs a string `content`")
            if message.get("role") not in {"system", "user", "assistant"}:
                raise ValueError(f"unknown role {message.get('role')!r}")
        if not any(m["role"] == "assistant" for m in messages):
            raise ValueError("no assistant message to learn from")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    if "instruction" in record and "output" in record:
        prompt = record["instruction"] + (f"\n\n{record['input']}" if record.get("input") else "")
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]
    raise ValueError("expected `messages` (chat) or `instruction`/`output` (alpaca)")


def load_conversations(path: Path) -> list[list[Message]]:
    """All conversations in the file; the first bad line stops the run with `file:line: reason`."""
    conversations = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                conversations.append(_to_messages(json.loads(line)))
            except (ValueError, TypeError, KeyError) as exc:
                raise DatasetError(f"{path}:{number}: {exc}") from exc
    if not conversations:
        raise DatasetError(f"{path}: no examples")
    return conversations


def split(items: list[Any], eval_fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Deterministic train/eval split: the same seed and data give the same split on every rank and run."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(items) - 1, max(1, round(eval_fraction * len(items)))) if eval_fraction > 0 else 0
    return [items[i] for i in order[n_eval:]], [items[i] for i in order[:n_eval]]


def tokenize(
    messages: list[Message],
    tokenizer: PreTrainedTokenizerBase,
    max_seq_len: int,
    truncation_side: Literal["left", "right"],
) -> Example:
    """Labels are the token ids inside assistant turns (content and end-of-turn marker), -100 elsewhere.
    Assistant spans come from rendering growing prefixes of the conversation, which works for any
    template whose rendering of a prefix is a prefix of the full rendering (ChatML and most others)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not (text.startswith(through) and through.startswith(before)):
            raise ValueError("the chat template does not render conversations prefix by prefix")
        spans.append((len(before), len(through)))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids: list[int] = encoded["input_ids"]
    labels = [
        token if any(start <= begin < end for start, end in spans) else IGNORE_INDEX
        for token, (begin, _) in zip(input_ids, encoded["offset_mapping"], strict=True)
    ]
    if len(input_ids) > max_seq_len:
        window = slice(-max_seq_len, None) if truncation_side == "left" else slice(0, max_seq_len)
        input_ids, labels = input_ids[window], labels[window]
    return Example(input_ids, labels)


def collate(batch: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Pads to the longest example of the batch (never beyond max_seq_len, which tokenize enforces):
    on a CPU, padding every batch to max_seq_len would only add wasted matmul work."""
    width = max(len(example.input_ids) for example in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def labelled_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Positions the causal-LM loss averages over: those whose next token carries a label."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def split_for_passes(batch: dict[str, torch.Tensor], max_tokens: int | None) -> list[dict[str, torch.Tensor]]:
    """A micro-batch as the fewest even row chunks of at most `max_tokens` padded tokens each (one row per chunk
    when a row alone is longer), rows sorted by length and each chunk cut to its longest row. Forward/backward
    per chunk (losses weighted by labelled tokens) gives the micro-batch's gradient while holding only one
    chunk's activations, the bulk of a LoRA step's memory, and the shorter chunks carry less padding."""
    rows, width = batch["input_ids"].shape
    if max_tokens is None or rows * width <= max_tokens:
        return [batch]
    lengths = batch["attention_mask"].sum(dim=1)
    order = torch.argsort(lengths, descending=True, stable=True)
    parts = torch.tensor_split(order, math.ceil(rows / max(1, max_tokens // width)))
    return [{key: value[part, : int(lengths[part].max())] for key, value in batch.items()} for part in parts]


@dataclass(frozen=True)
class PreparedData:
    train: list[Example]
    eval: list[Example]
    eval_conversations: list[list[Message]]
    sha256: str
    dropped: int


def prepare(
    path: Path,
    tokenizer: PreTrainedTokenizerBase,
    max_seq_len: int,
    truncation_side: Literal["left", "right"],
    eval_fraction: float,
    seed: int,
) -> PreparedData:
    """Load, split, tokenize. Examples left with no assistant token after truncation are dropped (they would
    give a NaN loss) and counted so the run can report them."""
    conversations = load_conversations(path)
    train_conv, eval_conv = split(conversations, eval_fraction, seed)

    def encode(items: list[list[Message]]) -> list[Example]:
        examples = [tokenize(messages, tokenizer, max_seq_len, truncation_side) for messages in items]
        return [e for e in examples if any(label != IGNORE_INDEX for label in e.labels)]

    train, evaluation = encode(train_conv), encode(eval_conv)
    if not train:
        raise DatasetError(f"{path}: no training example keeps an assistant token within max_seq_len")
    dropped = len(train_conv) + len(eval_conv) - len(train) - len(evaluation)
    return PreparedData(train, evaluation, eval_conv, file_sha256(path), dropped)
