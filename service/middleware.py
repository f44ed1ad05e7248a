"""Pure ASGI middleware, each answering in the OpenAI error shape.

- ``BodySizeLimit``: refuse bodies over the limit.
- ``InputGuard``: refuse a path or query with NUL or invalid percent-encoded UTF-8, and on the
  admin surface (whose bodies FastAPI parses) JSON that ``service.jsonbody`` refuses.
- ``CatchAll``: the last line: an exception nothing else handled becomes a response here and is
  not re-raised. Starlette's ``ServerErrorMiddleware`` re-raises after its 500, and uvicorn then
  closes the connection: the client's next keep-alive request was reset (issue 13). Known
  low-level failures map to 4xx/503 (``service.handlers.classify``).

Pure ASGI (not ``BaseHTTPMiddleware``) so streaming responses pass through untouched and the
per-request cost stays a few function calls.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import InvalidJSON, InvalidRequest, JunctionError, PayloadTooLarge
from service.handlers import classify
from service.jsonbody import loads

log = logging.getLogger(__name__)
DB_BUSY_HOLD_S = 5.0


async def send_error(send: Send, err: JunctionError, *, close: bool = False) -> None:
    body = json.dumps(err.to_body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": err.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _StartTracker:
    """A ``send`` that passes messages on and records whether the response has started."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class BodySizeLimit:
    """Refuse bodies over ``max_bytes`` by Content-Length, or while streaming them in."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Send) -> None:
        err = PayloadTooLarge(f"request body exceeds {self.max_bytes} bytes")
        await send_error(send, err, close=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._reject(send)
                    return
        seen = 0
        tracked = _StartTracker(send)

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise PayloadTooLarge(f"request body exceeds {self.max_bytes} bytes")
            return message

        try:
            await self.app(scope, limited_receive, tracked)
        except PayloadTooLarge:
            if not tracked.started:
                await self._reject(send)


def _bad_text(raw: bytes) -> bool:
    """NUL, or bytes that are not UTF-8 once percent-decoded (databases refuse both)."""
    if not raw:
        return False
    decoded = unquote_to_bytes(raw)
    if b"\x00" in decoded:
        return True
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


class InputGuard:
    """Refuse paths and queries no handler can store or look up, and (under ``json_prefixes``)
    JSON bodies ``service.jsonbody`` refuses, before any route runs."""

    def __init__(self, app: ASGIApp, *, json_prefixes: tuple[str, ...] = ("/admin",)) -> None:
        self.app = app
        self.json_prefixes = json_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogatepass")
        if _bad_text(raw_path) or _bad_text(scope.get("query_string", b"")):
            await send_error(send, InvalidRequest("the URL holds a NUL or invalid UTF-8"))
            return
        path: str = scope.get("path", "")
        if scope.get("method") not in ("POST", "PUT", "PATCH") or not path.startswith(
            self.json_prefixes
        ):
            await self.app(scope, receive, send)
            return
        ctype = dict(scope.get("headers", ())).get(b"content-type", b"")
        if b"json" not in ctype:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)
                return
            chunks.append(message.get("body", b""))
            more = bool(message.get("more_body"))
        raw = b"".join(chunks)
        if raw:
            try:
                loads(raw)
            except InvalidJSON as err:
                await send_error(send, err)
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class CatchAll:
    """Turn any exception that reached here into a response; never re-raise (see module doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = _StartTracker(send)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            err = classify(exc)
            if err.code == "database_busy":
                # readiness reports not-ready for a few seconds (service.health.routes)
                comps = getattr(getattr(scope.get("app"), "state", None), "components", None)
                if comps is not None:
                    comps.status["db_busy_until"] = time.monotonic() + DB_BUSY_HOLD_S
            if err.status_code >= 500 and err.code == "internal_error":
                log.error(
                    "unhandled error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc
                )
            if tracked.started:
                # Headers are out: nothing valid can follow; end the body instead of the socket
                # (if the response already ended, there is nothing left to do).
                with contextlib.suppress(Exception):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send_error(send, err)
