"""The gateway's exception tree; every one becomes the OpenAI error envelope.

::

    JunctionError                     500 server_error / internal_error
    ├── InvalidRequest                400 invalid_request_error
    │   ├── InvalidJSON               400 invalid_json
    │   ├── UnprocessableEntity       422 (admin and evaluation payloads)
    │   ├── PayloadTooLarge           413 payload_too_large
    │   └── ReplayMiss                400 replay_miss (a replay backend has no recorded answer)
    ├── AuthenticationFailed          401 authentication_error / invalid_api_key
    ├── NotFound                      404 not_found
    │   └── ModelNotFound             404 model_not_found
    ├── Conflict                      409 conflict
    ├── RateLimited                   429 rate_limit_exceeded (+ Retry-After)
    ├── BudgetExceeded                429 insufficient_quota / budget_exceeded
    ├── ServiceUnavailable            503 service_unavailable (+ Retry-After; database busy)
    └── UpstreamError                 502 upstream_error
        ├── UpstreamTimeout           504 upstream_timeout
        └── NoHealthyBackend          503 routing_failed (+ Retry-After)

``service.handlers`` maps them (and FastAPI's own errors) to responses; nothing else builds an
error body.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class JunctionError(Exception):
    status_code = 500
    type = "server_error"
    code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})

    def to_body(self) -> dict[str, Any]:
        info = ErrorInfo(message=self.message, type=self.type, param=self.param, code=self.code)
        return {"error": info.model_dump()}


class InvalidRequest(JunctionError):
    status_code = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidJSON(InvalidRequest):
    code = "invalid_json"


class UnprocessableEntity(InvalidRequest):
    status_code = 422
    code = "validation_error"


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    code = "payload_too_large"


class ReplayMiss(InvalidRequest):
    code = "replay_miss"


class AuthenticationFailed(JunctionError):
    status_code = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(JunctionError):
    status_code = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Conflict(JunctionError):
    status_code = 409
    type = "invalid_request_error"
    code = "conflict"


class RateLimited(JunctionError):
    status_code = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class BudgetExceeded(JunctionError):
    status_code = 429
    type = "insufficient_quota"
    code = "budget_exceeded"


class ServiceUnavailable(JunctionError):
    status_code = 503
    type = "server_error"
    code = "service_unavailable"


class UpstreamError(JunctionError):
    status_code = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    code = "upstream_timeout"


class NoHealthyBackend(UpstreamError):
    status_code = 503
    code = "routing_failed"


def error_body(
    message: str, *, type: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
