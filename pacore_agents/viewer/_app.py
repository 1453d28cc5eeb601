"""The viewer's ASGI app: the static page and the JSON of a ``ViewSource``, read only.

Routes: ``GET /`` (the page), ``GET /static/...`` (its script, style and the vendored graph
library), and, key-protected when a key is set (``Authorization: Bearer KEY``, as ``pacore
serve``), ``GET /api/source``, ``/api/version``, ``/api/traces``, ``/api/trace?name=&index=``,
``/api/study``, ``/api/run?arm=&problem=&sample=``. The page and its assets hold no data, so
they are served without the key (the page asks for it). Every response carries a strict
Content-Security-Policy (scripts and styles from this origin only, no inline code, no other
host) and ``X-Content-Type-Options: nosniff``. Reading the source runs in worker threads (at
most ``READERS`` at a time): the event loop never blocks on SQLite or the disk.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import SecretStr

from pacore_agents._errors import ConfigError
from pacore_agents.serve._auth import KeyChecker
from pacore_agents.serve._errors import APIError, install_error_handlers

from ._source import ViewSource

STATIC = Path(__file__).parent / "static"
READERS = 2
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
T = TypeVar("T")


def create_app(source: ViewSource, api_key: SecretStr | None = None) -> FastAPI:
    """The app serving ``source`` (see the module)."""
    keys = KeyChecker(api_key)
    limiter = anyio.CapacityLimiter(READERS)
    app = FastAPI(title="pacore view", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)

    async def read(request: Request, fn: Callable[..., T], *args: Any) -> T:
        keys.check(request.headers.get("authorization"))
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)
        except ConfigError as exc:
            raise APIError(404, str(exc), code="not_found") from exc

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/api/source")
    async def describe(request: Request) -> JSONResponse:
        return JSONResponse(await read(request, source.describe) | {"auth": keys.enabled})

    @app.get("/api/version")
    async def version(request: Request) -> JSONResponse:
        return JSONResponse({"version": await read(request, source.version)})

    @app.get("/api/traces")
    async def traces(request: Request) -> JSONResponse:
        return JSONResponse(await read(request, source.traces))

    @app.get("/api/trace")
    async def trace(request: Request, name: str, index: int = 0) -> JSONResponse:
        return JSONResponse(await read(request, source.trace, name, index))

    @app.get("/api/study")
    async def study(request: Request) -> JSONResponse:
        return JSONResponse(await read(request, source.study))

    @app.get("/api/run")
    async def run(request: Request, arm: str, problem: str, sample: int = 0) -> JSONResponse:
        return JSONResponse(await read(request, source.run, arm, problem, sample))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
