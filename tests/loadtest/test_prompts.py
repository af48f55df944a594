from __future__ import annotations

import random

import pytest

from loadtest.prompts import MaxTokens, load_prompts


def test_the_shipped_prompt_set_is_varied():
    prompts = load_prompts()
    assert len(prompts) >= 32 and len(set(prompts)) == len(prompts)  # a burst of 32 never repeats a prefix


def test_blank_lines_are_skipped_and_an_empty_file_is_refused(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n')
    assert load_prompts(path) == ["a", "b"]
    path.write_text("\n")
    with pytest.raises(ValueError, match="holds no prompts"):
        load_prompts(path)


def test_max_tokens_fixed_or_sampled_within_its_range():
    fixed, ranged = MaxTokens.parse("64"), MaxTokens.parse("32:128")
    rng = random.Random(0)
    assert {fixed.sample(rng) for _ in range(20)} == {64}
    drawn = [ranged.sample(rng) for _ in range(500)]
    assert min(drawn) >= 32 and max(drawn) <= 128 and len(set(drawn)) > 50
    assert (str(fixed), str(ranged)) == ("64", "32:128")


@pytest.mark.parametrize("spec", ["", "x", "0", "128:32", "1:2:3", "-5"])
def test_bad_max_tokens_specs_are_refused_naming_the_spec(spec):
    with pytest.raises(ValueError, match=f"bad --max-tokens {spec!r}"):
        MaxTokens.parse(spec)
