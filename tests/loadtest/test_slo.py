"""SLO grammar: good expressions, bad ones named by their token, verdicts and the goodput predicate."""

from __future__ import annotations

import pytest

from loadtest.slo import SLOError, breaches, meets_request_objectives, parse_slo


def test_parses_metrics_operators_and_units():
    objectives = parse_slo("ttft_p95<0.5s, itl_p95 <= 50ms,error_rate<0.01,tokens_per_s>100,latency_p99>=2")
    assert [(o.metric, o.op, o.value) for o in objectives] == [
        ("ttft_p95", "<", 0.5),
        ("itl_p95", "<=", 0.05),
        ("error_rate", "<", 0.01),
        ("tokens_per_s", ">", 100.0),
        ("latency_p99", ">=", 2.0),
    ]


@pytest.mark.parametrize(
    ("expression", "named"),
    [
        ("ttft_p97<1s", "'ttft_p97'"),
        ("ttft_p95<1h", "'h'"),
        ("error_rate<1ms", "'ms'"),
        ("ttft_p95=1", "'ttft_p95=1'"),
        ("ttft_p95<fast", "'ttft_p95<fast'"),
        ("ttft_p95<1s,,error_rate<0.1", "empty clause"),
    ],
)
def test_bad_expressions_name_the_bad_token(expression, named):
    with pytest.raises(SLOError, match=named):
        parse_slo(expression)


def test_breaches_list_failed_and_missing_metrics():
    objectives = parse_slo("ttft_p95<0.5s,tokens_per_s>100,itl_p50<1s")
    lines = breaches(objectives, {"ttft_p95": 0.7, "tokens_per_s": 150.0, "itl_p50": None})
    assert lines == ["ttft_p95<0.5s: observed ttft_p95=0.7", "itl_p50<1s: observed itl_p50=no data"]
    assert breaches(objectives, {"ttft_p95": 0.2, "tokens_per_s": 150.0, "itl_p50": 0.01}) == []


def test_goodput_predicate_uses_only_per_request_clauses():
    objectives = parse_slo("ttft_p95<0.5s,itl_p99<50ms,tokens_per_s>1e9")
    assert meets_request_objectives(objectives, {"ttft": 0.4, "itl": 0.04, "latency": 9.0})
    assert not meets_request_objectives(objectives, {"ttft": 0.6, "itl": 0.04, "latency": 1.0})
    assert not meets_request_objectives(objectives, {"ttft": 0.1, "itl": 0.06, "latency": 1.0})
