from __future__ import annotations

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serving.api.path_guard import PathGuardMiddleware


def test_control_characters_in_the_path_get_an_openai_shaped_400():
    app = Starlette(routes=[Route("/ok", lambda _: PlainTextResponse("fine"))])
    client = TestClient(PathGuardMiddleware(app))
    assert client.get("/ok").text == "fine"
    refused = client.post("/admin/models/%0A/load")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_path"
