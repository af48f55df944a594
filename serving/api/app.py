"""The FastAPI application; the engines' lifecycle belongs to whoever hosts it (the BentoML service)."""

from __future__ import annotations

from fastapi import FastAPI

from serving import __version__
from serving.api.admin import admin_router
from serving.api.body_limit import BodyLimitMiddleware
from serving.api.endpoints import completion_router, engine_router, fallback_router, openai_router, ops_router
from serving.api.errors import install_error_handlers
from serving.api.request_id import RequestIdMiddleware
from serving.api.shadows import primary_tokenizers, shadow_router
from serving.gateway import Gateway
from serving.pipeline.dispatch import Pipeline
from serving.settings import Settings
from serving.shadow.session import Shadower


def create_app(settings: Settings, gateway: Gateway | None = None) -> FastAPI:
    """Build the app; `gateway` may be attached later (`serve_gateway`) once the host has created it."""
    app = FastAPI(title="servekit", version=__version__, description="OpenAI-compatible LLM serving.")
    app.state.settings = settings
    app.state.rollouts = None
    app.state.api_keys = {key.sha256: key for key in settings.auth.keys}
    if gateway is not None:
        serve_gateway(app, gateway)
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.limits.max_request_bytes)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(completion_router)  # first: routes match in order, and these are the hot path
    app.include_router(engine_router)
    app.include_router(openai_router)
    app.include_router(ops_router)
    app.include_router(admin_router)
    app.include_router(shadow_router)
    app.include_router(fallback_router)
    return app


def serve_gateway(app: FastAPI, gateway: Gateway) -> None:
    """Requests to `app` are served by `gateway`'s versions through one request pipeline."""
    settings: Settings = app.state.settings
    app.state.gateway = gateway
    app.state.shadows = Shadower(
        settings.shadow, settings.shadows_dir, gateway.metrics.registry, primary_tokenizers(gateway)
    )
    gateway.kept_by.append(app.state.shadows.candidates)
    shared = gateway.shared
    app.state.shared = shared
    app.state.shared_keys = shared.key_lookup() if shared is not None else None
    app.state.pipeline = Pipeline(settings, gateway, app.state.shadows, shared, app.state.shared_keys)
