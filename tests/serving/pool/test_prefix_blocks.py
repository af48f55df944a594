from serving.pool.prefix_blocks import messages_text, prefix_blocks, request_text

SYSTEM = {"role": "system", "content": "You are a pirate. " * 20}


def blocks(messages: list[dict], salt: str = "m") -> list[int]:
    return prefix_blocks(messages_text(messages), block_chars=32, max_blocks=256, salt=salt)


def test_a_longer_conversation_extends_the_blocks_of_its_earlier_turn() -> None:
    turn1 = [SYSTEM, {"role": "user", "content": "Where is the treasure? " * 5}]
    turn2 = [*turn1, {"role": "assistant", "content": "Arr, buried. " * 5}, {"role": "user", "content": "Where?"}]
    first, second = blocks(turn1), blocks(turn2)
    assert len(second) > len(first)
    assert second[: len(first)] == first


def test_a_change_early_in_the_prompt_changes_every_later_block() -> None:
    other_system = {"role": "system", "content": "You are a parrot. " * 20}
    user = {"role": "user", "content": "hello " * 40}
    a, b = blocks([SYSTEM, user]), blocks([other_system, user])
    assert a[0] != b[0]
    assert not set(a) & set(b)


def test_the_salt_separates_adapters() -> None:
    assert not set(blocks([SYSTEM], "base")) & set(blocks([SYSTEM], "pirate-lora"))


def test_only_full_blocks_up_to_the_maximum() -> None:
    text = "x" * 100
    assert len(prefix_blocks(text, block_chars=32, max_blocks=256)) == 3
    assert len(prefix_blocks(text, block_chars=32, max_blocks=2)) == 2
    assert prefix_blocks("short", block_chars=32, max_blocks=256) == []


def test_roles_and_message_boundaries_are_part_of_the_text() -> None:
    one = messages_text([{"role": "user", "content": "ab"}])
    split = messages_text([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    assert one != split
    assert messages_text([{"role": "system", "content": "ab"}]) != one


def test_content_parts_and_tool_calls_count() -> None:
    parts = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "http://x/1.png"}}]
    other = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "http://x/2.png"}}]
    assert messages_text([{"role": "user", "content": parts}]) != messages_text([{"role": "user", "content": other}])
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "function": {"name": "f"}}]}
    assert "function" in messages_text([call])


def test_request_text_reads_chat_and_completions_bodies() -> None:
    assert request_text({"messages": [{"role": "user", "content": "hi"}]}) == messages_text(
        [{"role": "user", "content": "hi"}]
    )
    assert request_text({"prompt": "Once upon"}) == "Once upon"
    assert request_text({"prompt": [1, 2, 3]}) == ""
