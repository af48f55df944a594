"""Real traffic on a route and the admin calls around a rollout, for the end-to-end rollout tests."""

from __future__ import annotations

import threading
import time

import httpx


def admin(base_url: str, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{base_url}/admin{path}", timeout=120, **kwargs)


class Traffic:
    """Background chat requests to a route from many users, until stopped."""

    def __init__(
        self, base_url: str, route: str, threads: int = 3, pin: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        """`pin`: every request pinned to that version (`x-servekit-version`), the route's split bypassed."""
        self.base_url, self.route = base_url, route
        self.headers = ({"x-servekit-version": pin} if pin else {}) | (headers or {})
        self.stop_event = threading.Event()
        self.statuses: list[int] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, index: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=120) as client:
            n = 0
            while not self.stop_event.is_set():
                n += 1
                body = {"model": self.route, "user": f"u{index}-{n}", "max_tokens": 4,
                        "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
                try:
                    response = client.post("/v1/chat/completions", json=body, headers=self.headers)
                except httpx.TransportError:  # the server went away (a replica killed on purpose): this user stops
                    self.statuses.append(0)
                    return
                self.statuses.append(response.status_code)

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join()


def wait_for_phase(base_url: str, route: str, phases: set[str], timeout_s: float = 240) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = admin(base_url, "GET", f"/rollouts/{route}").json()
        if state["phase"] in phases:
            return state
        time.sleep(0.5)
    raise TimeoutError(f"rollout on {route} never reached {phases}: {state}")
