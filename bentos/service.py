"""The BentoML service: hosts servekit's FastAPI app and owns the engines' lifecycle.

One worker: the engine is a separate process with its own batching, and the gateway is async, so more
workers would only start more engines. The base model is declared as a BentoModel, so `bentoml build`
packs its weights into the bento.
"""

from __future__ import annotations

import bentoml

from loadtest.gate import run_gate
from serving import log
from serving.api.app import create_app, serve_gateway
from serving.api.path_guard import PathGuardMiddleware
from serving.gateway import Gateway
from serving.heap import settle_heap
from serving.registry.store import RegisteredModel, get_model_by_tag
from serving.rollout.controller import RolloutController
from serving.rollout.gateway_observer import GatewayObserver
from serving.rollout.observation import Observer
from serving.rollout.prometheus_observer import PrometheusObserver
from serving.rollout.store import RolloutStore
from serving.settings import load_settings

settings = load_settings()
log.configure()
app = create_app(settings)


@bentoml.asgi_app(app, path="/")
@bentoml.service(
    name="servekit",
    workers=1,
    traffic={"timeout": settings.server.request_timeout_s},
    metrics={"enabled": False},  # servekit's /metrics (own series + the engine's) replaces BentoML's
    endpoints={"livez": "/livez", "readyz": "/readyz"},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ["/v1/chat/completions", "/v1/completions"]},
)
class Servekit:
    base_model = bentoml.models.BentoModel(f"{settings.model.name}:{settings.model.version or 'latest'}")

    def __init__(self) -> None:
        adapters = [get_model_by_tag(tag) for tag in settings.model.adapters]
        more_bases = [(version, get_model_by_tag(version.model)) for version in settings.versions]
        base = RegisteredModel.from_stored(self.base_model)
        self.gateway = Gateway.from_settings(settings, base, adapters, more_bases)
        serve_gateway(app, self.gateway)
        observer: Observer = (
            PrometheusObserver(str(settings.observe.url))
            if settings.observe.url
            else GatewayObserver(self.gateway.metrics.recent)
        )
        store = RolloutStore(self.gateway.router.records)
        reports = settings.home.resolve() / "gate-reports"
        lease = self.gateway.shared.lease() if self.gateway.shared is not None else None
        self.rollouts = RolloutController(
            self.gateway, observer, store, reports, load_test=run_gate, lease=lease,
            renew_s=settings.state.lease_ttl_s / 3,
        )  # fmt: skip
        app.state.rollouts = self.rollouts

    @bentoml.on_startup
    async def start_engines(self) -> None:
        """Start in the background: /health answers at once, API calls get 503 until warm-up passed."""
        self.gateway.start()
        app.state.pipeline.degrader.start()
        self.rollouts.start_holding()
        settle_heap()

    @bentoml.on_shutdown
    async def stop_engines(self) -> None:
        await self.rollouts.stop()
        await app.state.pipeline.degrader.stop()
        await app.state.shadows.close()  # writes the results of shadow runs still going
        await app.state.pipeline.limiter.flush()  # rate-limit settlements still owed to the shared buckets
        if app.state.shared is not None:
            await app.state.shared.close()
        await self.gateway.stop()

    def __is_ready__(self) -> bool:
        return self.gateway.ready


Servekit.add_asgi_middleware(PathGuardMiddleware)
