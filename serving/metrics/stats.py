"""What one request measured, as plain data; exporters (Prometheus, the access log) read it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class RequestStats:
    route: str
    request_id: str = ""
    key_id: str = ""
    stream: bool = False
    model: str = ""
    version: str = ""
    replica: str = ""
    """The pool replica that took the request (`base/i`); empty before one was chosen."""
    status: int = 200
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    last_token_at: float | None = None
    inter_token_latencies: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finished: float | None = None

    def token_arrived(self) -> None:
        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
        elif self.last_token_at is not None:
            self.inter_token_latencies.append(now - self.last_token_at)
        self.last_token_at = now

    def finish(self, status: int) -> None:
        self.status = status
        self.finished = time.perf_counter()

    @property
    def duration_s(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def time_to_first_token_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started
