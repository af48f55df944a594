"""The comparison numbers from hand-made answer pairs."""

from __future__ import annotations

import pytest

from serving.shadow.answer import Answer
from serving.shadow.compare import (
    PairRecord,
    Tokenize,
    characters,
    compare,
    pair_records,
    percentile,
    ratio,
    token_similarity,
)


def answer(text: str = "a b c", *, status: int = 200, ttft: float | None = 0.1, latency: float = 1.0,
           ids: list[int] | None = None, temperature: float | None = 0.0) -> Answer:  # fmt: skip
    return Answer(status, latency, ttft, text, ids, temperature)


def pair_record(primary: Answer, candidate: Answer, tokenize: Tokenize = characters) -> PairRecord:
    return pair_records([(primary, candidate)], tokenize)[0]


def test_token_similarity_is_one_minus_normalized_edit_distance():
    assert token_similarity([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert token_similarity([1, 2, 3, 4], [1, 2, 4]) == pytest.approx(0.75)
    assert token_similarity([1, 2], [3, 4]) == 0.0
    assert token_similarity([], []) == 1.0


def test_token_ids_are_used_when_both_sides_have_them_else_both_texts_are_tokenized():
    by_ids = pair_record(answer("same", ids=[1, 2, 3]), answer("same", ids=[1, 2, 9]))
    assert by_ids.exact is False and by_ids.similarity == pytest.approx(2 / 3)
    by_text = pair_record(answer("hello", ids=[1]), answer("help"))
    assert by_text.similarity == pytest.approx(3 / 5) and (by_text.primary_tokens, by_text.candidate_tokens) == (5, 4)


def test_a_batch_tokenizes_every_distinct_text_once_in_one_call():
    calls: list[list[str]] = []

    def tokenize(texts: list[str]) -> list[list[int]]:
        calls.append(texts)
        return characters(texts)

    records = pair_records([(answer("ab"), answer("ab")), (answer("ab"), answer("abc")), (answer("x", ids=[1]),
                            answer("y", ids=[1]))], tokenize)  # fmt: skip
    assert calls == [["ab", "abc"]]
    assert [r.exact for r in records] == [True, False, True]
    assert records[1].similarity == pytest.approx(2 / 3)


def test_agreement_is_judged_only_at_temperature_zero_when_both_answered():
    assert pair_record(answer(temperature=0.7), answer()).similarity is None
    assert pair_record(answer(temperature=None), answer()).similarity is None
    assert pair_record(answer(), answer(status=500)).exact is None
    assert pair_record(answer(), answer(temperature=None)).exact is True


def test_compare_reports_errors_ratios_and_agreement():
    records = [
        pair_record(answer("x y", ttft=0.1, latency=1.0), answer("x y", ttft=0.2, latency=1.5)),
        pair_record(answer("x y", ttft=0.1, latency=1.0), answer("x z", ttft=0.2, latency=1.5)),
        pair_record(answer("x y", ttft=0.1, latency=1.0), answer(status=503, ttft=None)),
        pair_record(answer("x y", temperature=1.0), answer("abcdef", temperature=1.0)),
    ]
    result = compare(records)
    assert (result.pairs, result.compared) == (4, 2)
    assert result.error_rate == 0.25 and result.primary_error_rate == 0.0
    assert result.exact_match_rate == 0.5
    assert result.agreement == pytest.approx((1.0 + 2 / 3) / 2)
    assert result.ttft_p50_ratio == pytest.approx(2.0) and result.latency_p95_ratio == pytest.approx(1.5)
    assert result.output_length_ratio == pytest.approx((3 + 3 + 6) / (3 + 3 + 3))


def test_an_empty_run_has_no_numbers_rather_than_zeros():
    result = compare([])
    assert result.pairs == 0 and result.agreement is None and result.error_rate is None


def test_helpers_skip_missing_values():
    assert percentile([None, 1.0, 3.0], 50) == 2.0 and percentile([None], 50) is None
    assert ratio(2.0, 0.0) is None and ratio(None, 1.0) is None and ratio(3.0, 2.0) == 1.5
