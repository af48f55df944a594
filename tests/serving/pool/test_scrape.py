from serving.pool.scrape import requests_waiting
from tests.serving.pool.engine_page import METRICS_TEMPLATE


def test_reads_the_waiting_gauge() -> None:
    assert requests_waiting(METRICS_TEMPLATE.format(waiting=7.0)) == 7


def test_sums_over_label_sets() -> None:
    text = METRICS_TEMPLATE.format(waiting=2.0) + 'vllm:num_requests_waiting{engine="1",model_name="b"} 5.0\n'
    assert requests_waiting(text) == 7


def test_a_page_without_the_series_is_none_not_zero() -> None:
    assert requests_waiting("# TYPE up gauge\nup 1.0\n") is None
    assert requests_waiting("") is None
