from __future__ import annotations

from serving.api.errors import param_name


def test_param_names_read_like_openai_params():
    assert param_name(("body", "messages", 0, "role")) == "messages[0].role"
    assert param_name(("body", "temperature")) == "temperature"
    assert param_name(("body",)) is None
