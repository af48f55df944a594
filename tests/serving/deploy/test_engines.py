"""Engine pods: the managed child's flags, and a preStop that waits for the engine's own requests to finish."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serving.backends.vllm import server_args
from serving.deploy.engines import DRAIN_SCRIPT, cluster_engine_settings
from serving.settings import EngineSettings
from tests.serving.deploy.cluster import container, of_kind, rendered, two_versions


def test_engine_runs_the_managed_childs_flags_on_the_pod_port():
    settings = two_versions(engine={"max_num_seqs": 12, "extra_args": ["--seed", "3"]})
    engine = container(of_kind(rendered(settings), "Deployment")["servekit-engine-base-a"])
    expected = server_args(
        settings.engine.model_copy(update={"host": "0.0.0.0", "port": 8000}),
        "/home/bentoml/models/base-a/v1",
        "base-a",
        dtype="auto",
        gpu=False,
    )
    assert engine["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert engine["args"] == expected
    assert engine["args"][-2:] == ["--seed", "3"]
    assert engine["startupProbe"]["httpGet"]["path"] == "/health"
    assert engine["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}


def test_cpu_threads_bound_inside_the_pod_not_to_this_machines_cores():
    assert cluster_engine_settings(EngineSettings(cpu_threads_bind="all")).cpu_threads_bind == "auto"
    assert cluster_engine_settings(EngineSettings(cpu_threads_bind="0-3")).cpu_threads_bind == "0-3"


class BusyEngine(BaseHTTPRequestHandler):
    """/metrics with one running request for the first `busy_scrapes` scrapes, then none."""

    busy_scrapes = 3
    scrapes = 0

    def do_GET(self) -> None:
        type(self).scrapes += 1
        running = 1 if self.scrapes <= self.busy_scrapes else 0
        body = (
            "# HELP vllm:num_requests_running x\n"
            f'vllm:num_requests_running{{model_name="m"}} {running}.0\n'
            'vllm:num_requests_waiting{model_name="m"} 0.0\n'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_prestop_waits_until_the_engine_is_idle():
    server = ThreadingHTTPServer(("127.0.0.1", 0), BusyEngine)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        script = DRAIN_SCRIPT.format(settle=0, timeout=60, port=server.server_address[1])
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
        assert BusyEngine.scrapes == BusyEngine.busy_scrapes + 1
    finally:
        server.shutdown()
        server.server_close()


def test_prestop_returns_when_the_engine_no_longer_answers():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = DRAIN_SCRIPT.format(settle=0, timeout=600, port=port)
    assert subprocess.run([sys.executable, "-c", script], timeout=60, check=False).returncode == 0
