"""Errors in the OpenAI error JSON shape, for every failure the server can answer.

``{"error": {"message": ..., "type": ..., "param": ..., "code": ...}}``. A validation error is
400 and names the field in ``param`` and ``message``; nothing the server answers carries a
traceback (unexpected exceptions are logged server-side and answered with a generic 500).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pacore_agents._logging import get_logger

log = get_logger("pacore_agents.serve")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          405: "invalid_request_error", 413: "invalid_request_error", 500: "server_error",
          503: "service_unavailable", 504: "timeout"}


class APIError(Exception):
    """An error answered in the OpenAI shape with ``status``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, param=self.param, code=self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error" if status >= 500
                                                              else "invalid_request_error"),
                      "param": param, "code": code}}


def validation_error(exc: ValidationError | RequestValidationError, *, prefix: str = "") -> APIError:
    """The first error of a pydantic validation as a 400 naming the field (dotted path)."""
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    field = prefix + ".".join(loc)
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        msg = "unknown field"
    elif first.get("type") == "missing":
        msg = "field required"
    return APIError(400, f"{field}: {msg}" if field else msg, param=field or None, code="invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    """Answer framework errors (422 validation, 404/405 routing, crashes) in the OpenAI shape."""

    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError)
        return exc.response()

    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return validation_error(exc).response()

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = "not found" if exc.status_code == 404 else str(exc.detail)
        return APIError(exc.status_code, message).response()

    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", path=request.url.path, error=f"{type(exc).__name__}: {exc}")
        return APIError(500, "internal server error (see the server log)").response()

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, crash)
