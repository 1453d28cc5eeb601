"""The ASGI app: PaCoRe topologies served as OpenAI chat models.

Routes: ``GET /v1/models``, ``POST /v1/chat/completions``, ``GET /v1/pacore/traces/{id}``
(key-protected when a key is set), ``GET /health``, ``GET /metrics`` (Prometheus text).
``create_app`` builds the app around a ``ServerState``; the engine's start and the drain on
shutdown are driven by ``serve`` (see ``_server.py``), or by the caller.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pacore_agents._binding import DEFAULT_ENGINE
from pacore_agents._engine import Engine
from pacore_agents._errors import ConfigError
from pacore_agents._logging import get_logger
from pacore_agents._role_merge import RoleOverride, merge_roles
from pacore_agents._roles import builtin_roles, default_role
from pacore_agents._topology import Topology
from pacore_agents._wrappers import RetryPolicy

from ._auth import KeyChecker
from ._errors import APIError, install_error_handlers, validation_error
from ._metrics import CountingEngine, ServerMetrics
from ._models import ChatCompletionRequest, ModelList
from ._respond import RunResponse
from ._runs import TopologyCatalog, plan_request
from ._state import ServerState, TraceStore, render_traces

log = get_logger("pacore_agents.serve")

#: request bodies larger than this are refused (413) before they are parsed
MAX_BODY_BYTES = 8 << 20


class ServeSettings(BaseModel):
    """How the server behaves (the CLI's flags)."""

    model_config = ConfigDict(extra="forbid")

    topologies: list[str] = Field(default_factory=list, description="extra topologies: built-in names or spec paths")
    api_key: SecretStr | None = None
    trace_dir: Path | None = None
    keep_traces: int = Field(default=256, ge=0, description="completions whose traces stay in memory")
    request_timeout: float | None = Field(default=None, gt=0, description="seconds per request")
    default_max_tokens: int | None = Field(default=None, gt=0, description="per trajectory, if a request sets none")
    drain_timeout: float = Field(default=30.0, ge=0)
    retry: RetryPolicy | None = Field(default_factory=RetryPolicy, description="each run's engine retries")


def create_app(engine: Engine, settings: ServeSettings | None = None, *,
               engines: Mapping[str, Engine] | None = None,
               bindings: Mapping[str, RoleOverride] | None = None) -> FastAPI:
    """The app serving ``engine`` (not started here: see ``ServerState.start_engine``), and the
    named ``engines`` its roles are bound to by ``bindings`` (several models in one graph:
    ``/v1/models`` lists the engines each topology needs, ``/metrics`` tokens per engine).
    ``app.state.pacore`` is the ``ServerState``. Raises ``ConfigError`` for a bad topology or
    a binding to an engine it does not have."""
    settings = settings or ServeSettings()
    catalog = TopologyCatalog(settings.topologies)
    metrics = ServerMetrics()
    named = {name: CountingEngine(e, metrics, name) for name, e in (engines or {}).items()}
    roles = dict(bindings or {})
    unknown = sorted({r.engine for r in roles.values() if r.engine is not None and r.engine not in {DEFAULT_ENGINE, *named}})
    if unknown:
        raise ConfigError(f"a role runs on engine {unknown[0]!r}, which the server does not have "
                          f"(engines: {', '.join([DEFAULT_ENGINE, *named])})")
    state = ServerState(CountingEngine(engine, metrics), metrics,
                        TraceStore(settings.keep_traces, settings.trace_dir), engines=named, bindings=roles)

    def needs(topology: Topology) -> list[str]:
        merged = merge_roles({**builtin_roles(), **topology.roles}, roles)
        names = {(merged.get(topology.role_of(n) or default_role(n, topology.sink))
                  or merged["explorer"]).engine or DEFAULT_ENGINE for n in topology.nodes()}
        return sorted(names)
    keys = KeyChecker(settings.api_key)
    app = FastAPI(title="pacore serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.pacore = state
    install_error_handlers(app)

    def authorize(request: Request) -> None:
        keys.check(request.headers.get("authorization"))

    @app.get("/health")
    async def health() -> JSONResponse:
        code, body = state.health()
        return JSONResponse(body, status_code=code)

    @app.get("/metrics")
    async def metrics_route() -> Response:
        stats = await state.engine.stats() if state.status == "ready" else None
        if stats is not None:
            metrics.engine_running.set(stats.running or 0)
            metrics.engine_waiting.set(stats.waiting or 0)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        authorize(request)
        return JSONResponse(ModelList(data=catalog.cards(needs)).model_dump(mode="json"))

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str, request: Request) -> JSONResponse:
        authorize(request)
        for card in catalog.cards(needs):
            if card.id == model_id:
                return JSONResponse(card.model_dump(mode="json"))
        raise APIError(404, f"the model {model_id!r} does not exist", param="model", code="model_not_found")

    @app.get("/v1/pacore/traces/{completion_id}")
    async def trace(completion_id: str, request: Request) -> Response:
        authorize(request)
        traces = state.traces.get(completion_id)
        if traces is None:
            raise APIError(404, f"no trace {completion_id!r}: it is unknown or no longer kept "
                           f"(the server keeps the last {settings.keep_traces})", code="trace_not_found")
        return Response(render_traces(traces), media_type="application/json")

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> RunResponse:
        authorize(request)
        declared = request.headers.get("content-length", "0")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise APIError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise APIError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise APIError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from exc
        if not isinstance(data, dict):
            raise APIError(400, "the body must be a JSON object", code="invalid_json")
        try:
            req = ChatCompletionRequest.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc) from exc
        plan = plan_request(req, catalog, settings.default_max_tokens, settings.retry)
        state.admit()
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        log.info("chat completion", id=completion_id, model=req.model, n=req.n, stream=req.stream,
                 problem=plan.problem.id)
        return RunResponse(state, plan, completion_id, stream=req.stream, timeout=settings.request_timeout)

    app.add_middleware(AccessLog, metrics=metrics)
    return app


class AccessLog:
    """Counts and logs each HTTP request (method, path, status, seconds; never headers)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [0]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope["path"] if scope["path"] in _ROUTES else "other"
            route = "/v1/pacore/traces" if scope["path"].startswith("/v1/pacore/traces/") else route
            self.metrics.requests.labels(route, str(status[0] or 499)).inc()
            log.info("http", method=scope["method"], path=route, status=status[0] or 499,
                     seconds=round(time.perf_counter() - started, 3))


_ROUTES = {"/health", "/metrics", "/v1/models", "/v1/chat/completions"}
