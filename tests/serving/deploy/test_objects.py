from __future__ import annotations

import pytest

from serving.deploy.objects import MAX_LABEL, dns_label


def test_dns_label_makes_valid_distinct_names():
    assert dns_label("servekit-engine", "SmolLM2_135M.Instruct:v1") == "servekit-engine-smollm2-135m-instruct-v1"
    long_a, long_b = dns_label("servekit-engine", "x" * 80 + "a"), dns_label("servekit-engine", "x" * 80 + "b")
    assert len(long_a) == MAX_LABEL and long_a != long_b
    with pytest.raises(ValueError, match="Kubernetes name"):
        dns_label("9lives")
