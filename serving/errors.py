"""servekit's exception hierarchy; each error knows its HTTP status and OpenAI error fields.

Rendering to `{"error": {...}}` happens in one place: `serving.api.errors`.
"""

from __future__ import annotations

import math


class ServekitError(Exception):
    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequestError(ServekitError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    code = "context_length_exceeded"


class RequestTooLargeError(InvalidRequestError):
    status_code = 413
    code = "request_too_large"


class ModelNotFoundError(ServekitError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str, available: list[str]) -> None:
        names = ", ".join(available) or "none"
        super().__init__(f"The model `{model}` does not exist. Available models: {names}.", param="model")


class AuthenticationError(ServekitError):
    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class PermissionDeniedError(ServekitError):
    status_code = 403
    error_type = "invalid_request_error"
    code = "permission_denied"


class NotFoundError(ServekitError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class EndpointNotServedError(NotFoundError):
    """The version's engine has no such endpoint: embeddings from a generative model, the Responses API on
    Triton. Said in OpenAI's shape, naming the version, instead of the engine's bare 404 page."""

    code = "endpoint_not_served"

    def __init__(self, model: str, engine: str, path: str, hint: str = "") -> None:
        super().__init__(f"`{model}` ({engine} engine) does not serve {path}.{hint}", param="model")


class ConflictError(ServekitError):
    """The request clashes with current state (a rollout already running, a version still routed to)."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "conflict"


class LeaseLostError(ConflictError):
    """A rollout write carried a lease token that is no longer the holder's: another replica's controller took
    over (fencing), so this one must stop acting."""

    code = "lease_lost"


class MethodNotAllowedError(ServekitError):
    status_code = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class EngineUnavailableError(ServekitError):
    """The engine is starting, warming up, restarting or down: retry later."""

    status_code = 503
    error_type = "service_unavailable"
    code = "engine_unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class OverloadedError(EngineUnavailableError):
    """Load shedding: the engine already has as much work as it may queue."""

    code = "overloaded"


class RateLimitError(ServekitError):
    """A key's requests/min or tokens/min budget is spent (OpenAI: `type` requests|tokens, `rate_limit_exceeded`)."""

    status_code = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, limit_type: str, retry_after_s: float, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.error_type = limit_type
        self.retry_after_s = retry_after_s
        self._headers = headers

    def headers(self) -> dict[str, str]:
        return {**self._headers, "Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class StateUnavailableError(ServekitError):
    """The shared state (Redis) cannot be reached and `state.on_unavailable` is `closed`, or a change that must
    be shared cannot be written: refuse rather than act on one replica's view."""

    status_code = 503
    error_type = "service_unavailable"
    code = "state_unavailable"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class EngineError(ServekitError):
    """The engine failed a request in a way that is not the client's fault."""

    status_code = 502
    error_type = "server_error"
    code = "engine_error"


class EngineStartFailedError(ServekitError):
    """An engine started for a route change crashed or did not warm up in time; it was stopped again."""

    status_code = 503
    error_type = "service_unavailable"
    code = "engine_start_failed"
