"""Step 4 of a request, dispatch: the retry/fallback loop over the route's upstreams.

The candidates are tried in order until one answers or ``fallback_deadline_s`` has passed since
the request arrived: a transient failure is retried once on the same backend (a timeout is not:
a hung backend costs one read timeout), anything else moves on to the next candidate. Every
failure is recorded in ``BackendHealth`` (cooldowns). All of it happens before the first byte
goes to the client.

A 4xx (400/413/422) from a backend ends a concrete-model request; on a routed request the next
candidate is tried, and if another backend accepts the same request the rejecting ones are
counted as failing (a backend answering 400 to everything cools down); if every candidate
rejects it, the client gets the 400.

Usage::

    served = await dispatcher.dispatch(req, route, max_tokens=turn.max_tokens)
    served.body or served.stream
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

from service.errors import InvalidRequest, NoHealthyBackend, UpstreamError, UpstreamTimeout
from service.metrics import Metrics
from service.openai.decide import Route
from service.openai.parse import ParsedRequest
from service.routing.engine import Decision
from service.routing.registry import PoolEntry
from service.upstream.client import UpstreamClient, UpstreamFailure, UpstreamStream
from service.upstream.health import BackendHealth
from service.upstream.replay import ReplayBackend, ReplayStream

log = logging.getLogger(__name__)
# Fields of the request body that are the gateway's own: never forwarded upstream.
GATEWAY_FIELDS = ("routing", "budget")


@dataclass(frozen=True)
class Served:
    """The upstream answer: a JSON body or an open stream, and who gave it."""

    entry: PoolEntry
    decision: Decision | None
    fallbacks: int  # candidates tried before this one
    t_upstream: float  # when the successful attempt started
    body: dict[str, Any] | None = None
    stream: UpstreamStream | ReplayStream | None = None


def upstream_payload(
    req: ParsedRequest, entry: PoolEntry, max_tokens: int | None
) -> dict[str, Any]:
    """The body sent to ``entry``'s backend: the client's, minus the gateway's fields."""
    payload = {k: v for k, v in req.body.items() if k not in GATEWAY_FIELDS}
    payload["model"] = entry.backend.model or entry.name
    # One field upstream: llama.cpp ignores max_completion_tokens, vLLM accepts max_tokens.
    payload.pop("max_completion_tokens", None)
    if max_tokens is not None:
        payload["max_tokens"] = max_tokens
    if req.stream:
        # Always ask for usage: budgets and spend need the real numbers.
        payload["stream_options"] = {
            **(req.body.get("stream_options") or {}),
            "include_usage": True,
        }
    return payload


class Dispatcher:
    def __init__(
        self,
        *,
        upstream: UpstreamClient,
        health: BackendHealth,
        replay: ReplayBackend,
        metrics: Metrics,
        deadline_s: float,
    ) -> None:
        self.upstream = upstream
        self.health = health
        self.replay = replay
        self.metrics = metrics
        self.deadline_s = deadline_s

    async def dispatch(self, req: ParsedRequest, route: Route, *, max_tokens: int | None) -> Served:
        last: UpstreamFailure | None = None
        rejected: list[tuple[str, UpstreamFailure]] = []
        deadline = req.t_start + self.deadline_s
        routed = route.decision is not None
        for i, entry in enumerate(route.entries):
            name = entry.name
            for attempt in range(2):
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                t_up = time.perf_counter()
                try:
                    try:
                        served = await asyncio.wait_for(
                            self._attempt(req, entry, route.decision, t_up, max_tokens),
                            timeout=left,
                        )
                    except TimeoutError:
                        raise UpstreamFailure(
                            "timeout", "the request's fallback deadline passed"
                        ) from None
                except UpstreamFailure as f:
                    last = f
                    self.health.record_failure(name, f)
                    self.metrics.upstream_errors.labels(model=name, kind=f.kind).inc()
                    log.warning("upstream %s failed (%s): %s", name, f.kind, f.message)
                    if f.client_error:
                        if not routed:
                            raise InvalidRequest(
                                f"{name} rejected the request: {f.message}",
                                code="upstream_rejected",
                            ) from None
                        rejected.append((name, f))
                        break
                    if attempt == 0 and self.health.retryable(f):
                        self.metrics.retries.labels(model=name).inc()
                        continue
                    break
                if served.body is not None:
                    # A stream counts as a success only once it ends cleanly (the relay): a
                    # backend that always cuts streams mid-way must still cool down.
                    self.health.record_success(name)
                for bad, _ in rejected:  # another backend took this very request
                    self.health.record_rejection(bad)
                if i:
                    self.metrics.fallbacks.inc()
                return dataclasses.replace(served, fallbacks=i)
            if time.perf_counter() >= deadline:
                break
        self.metrics.cooling.set(len(self.health.cooling_models()))
        if rejected and (last is None or last.client_error):
            first, why = rejected[0]
            raise InvalidRequest(
                f"{first} rejected the request: {why.message}", code="upstream_rejected"
            )
        if last is not None and last.kind == "timeout":
            raise UpstreamTimeout(f"backend timed out: {last.message}")
        if last is not None:
            raise UpstreamError(
                f"backend failed: {last.message}"
                if last.status is None or last.status < 500
                else f"backend answered {last.status}",
                headers={"Retry-After": "5"},
            )
        raise NoHealthyBackend("no backend could serve the request", headers={"Retry-After": "5"})

    async def _attempt(
        self,
        req: ParsedRequest,
        entry: PoolEntry,
        decision: Decision | None,
        t_up: float,
        max_tokens: int | None,
    ) -> Served:
        if entry.backend.kind == "replay":
            answer = self.replay.lookup(entry.backend.model or entry.name, req.prompt_text)
            if answer is None:
                raise UpstreamFailure("status", "no recorded answer", status=404)
            chat = req.kind == "chat"
            body = self.replay.complete(
                entry,
                answer,
                chat=chat,
                prompt_tokens=req.prompt_tokens_est,
                max_tokens=max_tokens,
            )
            if req.stream:
                return Served(entry, decision, 0, t_up, stream=self.replay.stream(body, chat=chat))
            return Served(entry, decision, 0, t_up, body=body)
        payload = upstream_payload(req, entry, max_tokens)
        if req.stream:
            stream = await self.upstream.open_stream(
                entry.backend, req.path, payload, request_id=req.request_id
            )
            return Served(entry, decision, 0, t_up, stream=stream)
        body = await self.upstream.post_json(
            entry.backend, req.path, payload, request_id=req.request_id
        )
        return Served(entry, decision, 0, t_up, body=body)
