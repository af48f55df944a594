from __future__ import annotations

from serving.metrics.prometheus import GatewayMetrics
from serving.metrics.stats import RequestStats


def test_record_counts_tokens_and_latencies():
    metrics = GatewayMetrics()
    stats = RequestStats(route="r", model="m", version="m:1")
    stats.token_arrived()
    stats.token_arrived()
    stats.token_arrived()
    stats.prompt_tokens, stats.completion_tokens = 10, 3
    stats.finish(200)
    metrics.record(stats)
    text = metrics.render([]).decode()
    assert 'servekit_requests_total{model="m",route="r",status="200",version="m:1"} 1.0' in text
    assert 'servekit_output_tokens_total{model="m",route="r",version="m:1"} 3.0' in text
    assert 'servekit_inter_token_latency_seconds_count{model="m",route="r",version="m:1"} 2.0' in text
    assert 'servekit_time_to_first_token_seconds_count{model="m",route="r",version="m:1"} 1.0' in text


def test_failed_requests_count_but_add_no_tokens():
    metrics = GatewayMetrics()
    stats = RequestStats(route="r", model="m", version="m:1", completion_tokens=5)
    stats.finish(503)
    metrics.record(stats)
    text = metrics.render([]).decode()
    assert 'status="503"' in text
    assert "servekit_output_tokens_total{" not in text


def test_only_engine_series_are_appended():
    engine = "# HELP vllm:x help\n# TYPE vllm:x gauge\nvllm:x 1.0\nprocess_cpu_seconds_total 3.0\n"
    text = GatewayMetrics().render([engine]).decode()
    assert "vllm:x 1.0" in text
    assert "process_cpu_seconds_total 3.0" not in text


def test_an_expected_version_has_its_series_at_zero_before_its_first_request():
    metrics = GatewayMetrics()
    metrics.expect("m", "m:2", "chat")
    text = metrics.render([]).decode()
    for status in ("200", "500", "502", "503"):
        assert f'servekit_requests_total{{model="m",route="chat",status="{status}",version="m:2"}} 0.0' in text
    assert 'servekit_time_to_first_token_seconds_count{model="m",route="chat",version="m:2"} 0.0' in text
    assert 'servekit_request_duration_seconds_bucket{le="0.01",model="m",route="chat",version="m:2"} 0.0' in text
    stats = RequestStats(route="chat", model="m", version="m:2")
    stats.finish(502)
    metrics.record(stats)
    assert (
        'servekit_requests_total{model="m",route="chat",status="502",version="m:2"} 1.0' in metrics.render([]).decode()
    )
