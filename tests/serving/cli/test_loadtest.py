"""`servekit loadtest run` against a gateway with API keys on (fake engine, uvicorn in a thread): the run's
requests carry OPENAI_API_KEY, as the openai client's do."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from serving.api.auth import key_digest
from serving.settings import AccessLogSettings, ApiKey, AuthSettings, Settings
from tests.serving.threaded_stack import threaded_stack


def test_a_load_test_authenticates_with_openai_api_key(tmp_path):
    keys = [ApiKey(id="bench", sha256=key_digest("sk-bench"))]
    settings = Settings(home=tmp_path, auth=AuthSettings(keys=keys), access_log=AccessLogSettings(enabled=False))
    with threaded_stack(tmp_path, settings, "chat") as (url, _):
        command = [sys.executable, "-c", "from serving.cli import main; main()", "loadtest", "run", "--url", url,
                   "--model", "chat", "--users", "2", "--duration", "2s", "--max-tokens", "4",
                   "--out", str(tmp_path / "run")]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "LOCUST_SKIP_MONKEY_PATCH"} | {"OPENAI_API_KEY": "sk-bench"}
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["overall"]["requests"] > 0 and results["overall"]["errors"] == 0
