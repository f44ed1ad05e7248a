"""Map every failure to the OpenAI error envelope: domain errors, FastAPI validation, 404/405.

Schema validation answers 422 on the management surfaces (``/admin``, ``/v1/evaluations``) and
400 on the OpenAI surface, as OpenAI itself does for wrong types.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import (
    InvalidJSON,
    InvalidRequest,
    JunctionError,
    ServiceUnavailable,
    error_body,
)

log = logging.getLogger(__name__)

_HTTP_TYPES = {
    401: ("authentication_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "payload_too_large"),
}


def _is_management(path: str) -> bool:
    return path.startswith("/admin") or path.startswith("/v1/evaluations")


def describe_validation(errors: list[Any]) -> tuple[str, str | None]:
    """One readable message naming every bad field, and the first field's dotted path."""
    parts: list[str] = []
    first: str | None = None
    for err in errors:
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body",)]
        where = ".".join(loc) or "body"
        if first is None:
            first = where
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request", first


def validation_response(path: str, errors: list[Any]) -> JSONResponse:
    message, param = describe_validation(errors)
    status = 422 if _is_management(path) else 400
    return JSONResponse(
        error_body(message, type="invalid_request_error", code="validation_error", param=param),
        status_code=status,
    )


async def junction_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, JunctionError)
    return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers)


async def request_validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError | ValidationError)
    return validation_response(request.url.path, list(exc.errors()))


async def http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_, code = _HTTP_TYPES.get(exc.status_code, ("invalid_request_error", None))
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    return JSONResponse(
        error_body(message, type=type_, code=code),
        status_code=exc.status_code,
        headers=dict(exc.headers or {}),
    )


def classify(exc: BaseException) -> JunctionError:
    """The error an exception no handler caught stands for. Low-level failures that bad input
    or a busy database cause map to 4xx/503; anything else is a 500 that carries no internals
    (paths, stack traces) to the client."""
    if isinstance(exc, JunctionError):
        return exc
    if isinstance(exc, RecursionError):
        return InvalidJSON("input nested too deeply")
    if isinstance(exc, UnicodeError):
        return InvalidRequest("input is not valid Unicode text (a lone surrogate?)")
    if isinstance(exc, OverflowError):
        return InvalidRequest("a number in the input is out of range")
    try:
        from sqlalchemy.exc import DataError, OperationalError
    except ImportError:  # pragma: no cover - sqlalchemy is a serve dependency
        DataError = OperationalError = ()  # type: ignore[assignment,misc]  # noqa: N806
    if isinstance(exc, DataError):
        return InvalidRequest("a value in the input cannot be stored (out of range or NUL)")
    if isinstance(exc, OperationalError) and "locked" in str(exc.orig):
        return ServiceUnavailable(
            "the database is busy; retry shortly",
            code="database_busy",
            headers={"Retry-After": "1"},
        )
    return JunctionError("internal server error")


async def unhandled_handler(request: Request, exc: Exception) -> JSONResponse:
    err = classify(exc)
    if err.code == "internal_error":
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(err.to_body(), status_code=err.status_code, headers=err.headers)


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(JunctionError, junction_error_handler)
    app.add_exception_handler(RequestValidationError, request_validation_handler)
    app.add_exception_handler(ValidationError, request_validation_handler)
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
    app.add_exception_handler(Exception, unhandled_handler)
