"""The upstream client: pooled aiohttp connections to vLLM or any OpenAI-compatible server.

Why aiohttp and not httpx: measured on this 2-core machine against the same fake vLLM backend
(3,000 non-stream requests at 64 concurrent, one pooled client each), httpx.AsyncClient managed
83 req/s with p99 3.5 s, aiohttp 910-950 req/s with p99 230-270 ms.

Every failure becomes an :class:`UpstreamFailure` with a kind the retry/fallback/cooldown policy
reads (see ``service.upstream.health``). Backend error bodies are normalised: both vLLM shapes,
``{"detail": ...}`` and plain text, and file paths are scrubbed before anything reaches a client.

Usage::

    client = UpstreamClient(connect_timeout_s=3, read_timeout_s=60, max_connections=512)
    await client.start()
    body = await client.post_json(backend, "/chat/completions", payload)
    stream = await client.open_stream(backend, "/chat/completions", payload)
    async for data in stream: ...
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

import aiohttp

from service.routing.registry import Backend

DONE = "[DONE]"
_PATH_RE = re.compile(r"(?:[A-Za-z]:)?(?:/[\w.\-]+){2,}")


class UpstreamFailure(Exception):
    """One failed attempt. ``kind``: connect | timeout | status | cut | protocol."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after

    @property
    def client_error(self) -> bool:
        """The request itself is bad (400/413/422): no retry, no fallback, no cooldown."""
        return self.kind == "status" and self.status in (400, 413, 422)


def scrub(message: str) -> str:
    return _PATH_RE.sub("<path>", message)[:500]


def error_message(status: int, raw: bytes) -> str:
    """The message of a backend error body in any of the shapes seen in the field."""
    text = raw.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        return scrub(text.strip() or f"status {status}")
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and "message" in err:
            return scrub(str(err["message"]))
        if isinstance(err, str):
            return scrub(err)
        if "message" in body:  # older vLLM: {"object": "error", "message": ...}
            return scrub(str(body["message"]))
        if "detail" in body:  # llama-cpp-python / FastAPI
            return scrub(str(body["detail"]))
    return scrub(text)


def _retry_after(headers: Any) -> float | None:
    v = headers.get("Retry-After")
    try:
        return float(v) if v is not None else None
    except ValueError:
        return None


def _url(backend: Backend, path: str) -> str:
    assert backend.url is not None
    return backend.url.rstrip("/") + path


def _headers(backend: Backend, request_id: str | None) -> dict[str, str]:
    h = {"Content-Type": "application/json"}
    if backend.api_key:
        h["Authorization"] = f"Bearer {backend.api_key}"
    if request_id:
        h["X-Request-Id"] = request_id
    return h


@dataclass
class UpstreamStream:
    """The SSE events of one upstream response: ``data`` payloads, ``DONE`` last."""

    response: aiohttp.ClientResponse
    read_timeout_s: float
    first: str | None = None

    def __aiter__(self) -> UpstreamStream:
        return self

    async def __anext__(self) -> str:
        if self.first is not None:
            first, self.first = self.first, None
            return first
        data = await self._next_data()
        if data is None:
            raise StopAsyncIteration
        return data

    async def _next_data(self) -> str | None:
        """The next event's data; None at a clean end ([DONE] seen earlier); raises on a cut."""
        parts: list[str] = []
        content = self.response.content
        while True:
            try:
                line_b = await asyncio.wait_for(content.readline(), self.read_timeout_s)
            except TimeoutError as exc:
                raise UpstreamFailure("timeout", "backend went silent mid-stream") from exc
            except aiohttp.ClientError as exc:
                raise UpstreamFailure("cut", f"stream broken: {type(exc).__name__}") from exc
            if not line_b:  # EOF
                if parts:
                    return "\n".join(parts)
                raise UpstreamFailure("cut", "backend closed the stream before [DONE]")
            line = line_b.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                if parts:
                    return "\n".join(parts)
                continue
            if line.startswith(":"):
                continue  # SSE comment (keep-alive)
            if line.startswith("data:"):
                parts.append(line[5:].lstrip(" "))
            # other fields (event:, id:, retry:) carry nothing we relay

    async def aclose(self) -> None:
        self.response.release()
        self.response.close()


class UpstreamClient:
    def __init__(
        self,
        *,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 60.0,
        max_connections: int = 512,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=300
        )
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.connect_timeout_s, sock_read=self.read_timeout_s
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=True, raise_for_status=False
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("UpstreamClient.start() was not awaited")
        return self._session

    async def _send(
        self, backend: Backend, path: str, payload: dict[str, Any], request_id: str | None
    ) -> aiohttp.ClientResponse:
        try:
            return await self.session.post(
                _url(backend, path),
                data=json.dumps(payload, separators=(",", ":")),
                headers=_headers(backend, request_id),
            )
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise UpstreamFailure("timeout", "backend did not answer in time") from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamFailure("connect", "backend unreachable") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamFailure(
                "connect", f"backend connection failed: {type(exc).__name__}"
            ) from exc

    async def _fail_on_status(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status == 200:
            return
        try:
            raw = await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            raw = b""
        finally:
            resp.release()
        raise UpstreamFailure(
            "status",
            error_message(resp.status, raw),
            status=resp.status,
            retry_after=_retry_after(resp.headers),
        )

    async def post_json(
        self,
        backend: Backend,
        path: str,
        payload: dict[str, Any],
        *,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        resp = await self._send(backend, path, payload, request_id)
        await self._fail_on_status(resp)
        try:
            raw = await resp.read()
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise UpstreamFailure("timeout", "backend did not finish in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamFailure("cut", "backend closed the connection mid-body") from exc
        finally:
            resp.release()
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise UpstreamFailure("protocol", "backend sent a body that is not JSON") from exc
        if not isinstance(body, dict) or "choices" not in body:
            raise UpstreamFailure("protocol", "backend sent a response without choices")
        return body

    async def open_stream(
        self,
        backend: Backend,
        path: str,
        payload: dict[str, Any],
        *,
        request_id: str | None = None,
    ) -> UpstreamStream:
        """Open the stream and read its first event, so a failure here can still fall back."""
        resp = await self._send(backend, path, payload, request_id)
        await self._fail_on_status(resp)
        stream = UpstreamStream(resp, self.read_timeout_s)
        try:
            first = await stream._next_data()
        except UpstreamFailure:
            await stream.aclose()
            raise
        if first is None:
            await stream.aclose()
            raise UpstreamFailure("cut", "backend sent an empty stream")
        stream.first = first
        return stream

    async def probe(self, backend: Backend, *, timeout_s: float = 2.0) -> bool:
        """Active health probe: ``GET {url}/models`` (vLLM and llama.cpp both serve it)."""
        if backend.url is None:
            return True
        try:
            async with self.session.get(
                _url(backend, "/models"),
                headers=_headers(backend, None),
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                await resp.read()
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
