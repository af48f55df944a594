from __future__ import annotations

from serving.errors import ContextLengthExceededError, EngineUnavailableError, ModelNotFoundError


def test_error_bodies_have_the_openai_shape():
    body = ModelNotFoundError("gpt-9", ["a", "b"]).body()
    assert body == {
        "error": {
            "message": "The model `gpt-9` does not exist. Available models: a, b.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


def test_unavailable_carries_retry_after():
    error = EngineUnavailableError("starting", retry_after_s=7)
    assert error.status_code == 503
    assert error.headers() == {"Retry-After": "7"}


def test_context_length_is_a_400_invalid_request():
    error = ContextLengthExceededError("too long", param="messages")
    assert (error.status_code, error.error_type, error.code) == (
        400,
        "invalid_request_error",
        "context_length_exceeded",
    )
