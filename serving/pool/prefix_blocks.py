"""A request's prompt as chained hashes of fixed-size blocks of characters: what `prefix_affinity` indexes.

Characters, not tokens, and the raw messages, not the chat-templated prompt: the template is a deterministic
function of the messages, so two requests share a templated prefix exactly when they share a messages prefix (up
to the template's fixed header), and skipping the tokenizer and the template keeps this to string slicing and
hashing (no tokenizer on the hot path). A block of characters is not aligned with the engine's KV blocks of tokens,
so a match is approximate at its last block: the index predicts which replica holds most of the prefix, not
exactly how much of it.

Block i's hash covers blocks 0..i (each hash takes the previous one in), so one dictionary lookup answers "was this
whole prefix seen" and a prefix-closed index can be searched by bisection. Only full blocks count: the engine
caches full blocks only, and the partial tail changes with every turn of a conversation. `hash()` is Python's,
salted per process: the index lives in this process only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

ROLE_END = "\x1f"
MESSAGE_END = "\x1e"


def content_text(content: Any) -> str:
    """A message's content as text: strings as they are, other parts (images, audio) as canonical JSON."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"] if isinstance(part, Mapping) and part.get("type") == "text" else _canonical(part)
            for part in content
        )
    return _canonical(content)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def messages_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The conversation as one string whose prefixes follow the conversation's: role and content of each message,
    with its tool calls, separated by characters that do not occur in text."""
    parts = []
    for message in messages:
        parts.append(str(message.get("role", "")))
        parts.append(ROLE_END)
        parts.append(content_text(message.get("content")))
        if message.get("tool_calls"):
            parts.append(_canonical(message["tool_calls"]))
        parts.append(MESSAGE_END)
    return "".join(parts)


def request_text(body: Mapping[str, Any]) -> str:
    """The prompt of a chat (`messages`) or completions (`prompt`) request body; "" for anything else."""
    if isinstance(body.get("messages"), list):
        return messages_text(body["messages"])
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def prefix_blocks(text: str, block_chars: int, max_blocks: int, salt: str = "") -> list[int]:
    """Chained hashes of the first `max_blocks` full blocks of `block_chars` characters. `salt` separates caches
    that never share blocks: give the served model or adapter name (an engine's prefix cache is per adapter)."""
    count = min(len(text) // block_chars, max_blocks)
    hashes = []
    running = hash(salt)
    for start in range(0, count * block_chars, block_chars):
        running = hash((running, text[start : start + block_chars]))
        hashes.append(running)
    return hashes
