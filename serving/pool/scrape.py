"""Read the one engine series the replica policies use out of a vLLM `/metrics` page."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

WAITING_FAMILY = "vllm:num_requests_waiting"


def requests_waiting(metrics_text: str) -> int | None:
    """Requests queued in the engine (summed over its label sets, e.g. one per served model), or None when the
    page does not carry the series (not a vLLM engine, or an empty page from an engine that is down)."""
    found, total = False, 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != WAITING_FAMILY:
            continue
        for sample in family.samples:
            if sample.name == WAITING_FAMILY:
                found, total = True, total + sample.value
    return round(total) if found else None
