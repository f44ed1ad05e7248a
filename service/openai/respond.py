"""Step 5 of a request, respond: the upstream answer to the client, then its record.

JSON: the usage (counted by the gateway's tokenizer when the backend reported none), the output
cut to the turn's ``max_tokens`` if the backend ignored it, ``model`` set to the model that
served. SSE: the upstream events relayed one by one in the spec's shape, cut at the grant, our
usage chunk when asked for, ``[DONE]``; a failure after the first byte becomes an SSE error event.
Either way the request is recorded before the client has the last byte: metrics, the key's
spend, the conversation's budget and sticky model, the dashboard's request log.

Usage::

    responder.json(req, served, turn=turn, spend=spend, conv_state=state)
    responder.stream(req, served, turn=turn, spend=spend, conv_state=state, holds=stack)
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from service.metrics import Metrics
from service.openai.dispatch import Served
from service.openai.grant import Spend, Turn
from service.openai.parse import ParsedRequest
from service.request_log import RequestLog, RequestRecord, text_sha256
from service.state import StateStore
from service.tokens import count_prompt_tokens, count_tokens, truncate_to_tokens
from service.upstream.client import DONE, UpstreamFailure, UpstreamStream, error_message
from service.upstream.health import BackendHealth

log = logging.getLogger(__name__)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Responder:
    def __init__(
        self,
        *,
        health: BackendHealth,
        metrics: Metrics,
        store: StateStore,
        conversation_ttl_s: int,
        requests_log: RequestLog | None = None,
    ) -> None:
        self.health = health
        self.metrics = metrics
        self.store = store
        self.conversation_ttl_s = conversation_ttl_s
        self.requests_log = requests_log  # one durable record per served request (dashboard)
        self._tasks: set[asyncio.Task[None]] = set()

    # --- headers and usage
    def headers(
        self, req: ParsedRequest, s: Served, turn: Turn, cost: float, overhead_ms: float
    ) -> dict[str, str]:
        h = {
            "x-request-id": req.request_id,
            "x-junction-model": s.entry.name,
            "x-junction-router": s.decision.router if s.decision else "none",
            "x-junction-cost-usd": f"{cost:.8f}",
            "x-junction-overhead-ms": f"{overhead_ms:.2f}",
            "x-junction-fallbacks": str(s.fallbacks),
            "x-junction-backend": s.entry.backend.kind,
        }
        if s.decision is not None:
            r = s.decision.entry_for(s.entry.name)
            if r is not None:
                h["x-junction-p-correct"] = f"{r.p_correct:.4f}"
            h["x-junction-lambda"] = repr(s.decision.lam)
            h["x-junction-sticky"] = "true" if s.decision.sticky else "false"
        if turn.grant is not None and turn.left is not None:
            h["x-junction-budget-remaining"] = str(turn.left)
            h["x-junction-budget-max-tokens"] = str(turn.grant.granted)
        return h

    @staticmethod
    async def usage(req: ParsedRequest, usage: Any, completion_texts: list[str]) -> dict[str, int]:
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            p = int(usage.get("prompt_tokens") or 0)
            c = int(usage["completion_tokens"])
            return {**usage, "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
        # The backend reported none (llama.cpp): count with the real tokenizer, off the loop.
        roles = list(req.roles) if req.roles is not None else None
        p = await asyncio.to_thread(count_prompt_tokens, list(req.message_texts), roles)
        c = (
            sum(await asyncio.to_thread(count_tokens, ["".join(completion_texts)]))
            if completion_texts
            else 0
        )
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    # --- JSON
    async def json(
        self,
        req: ParsedRequest,
        s: Served,
        *,
        turn: Turn,
        spend: Spend,
        conv_state: Mapping[str, Any],
    ) -> Response:
        body = s.body
        assert body is not None
        t_done = time.perf_counter()
        texts = []
        truncated = False
        for ch in body.get("choices") or []:
            truncated = truncated or ch.get("finish_reason") == "length"
            if req.kind == "chat":
                texts.append(str((ch.get("message") or {}).get("content") or ""))
            else:
                texts.append(str(ch.get("text") or ""))
        usage = await self.usage(req, body.get("usage"), texts)
        cap = turn.max_tokens
        if cap is not None and usage["completion_tokens"] > cap:
            usage, cut = await asyncio.to_thread(_cut_json, req, body, usage, cap)
            truncated = truncated or cut
        body["usage"] = usage
        body["model"] = s.entry.name
        cost = s.entry.cost_usd(usage["prompt_tokens"], usage["completion_tokens"])
        upstream_s = t_done - s.t_upstream
        overhead_ms = (time.perf_counter() - req.t_start - upstream_s) * 1000
        self.metrics.latency.labels(stage="upstream").observe(upstream_s)
        await self.record(req, s, turn, spend, usage, cost, conv_state, truncated=truncated)
        return JSONResponse(body, headers=self.headers(req, s, turn, cost, overhead_ms))

    # --- SSE
    def stream(
        self,
        req: ParsedRequest,
        s: Served,
        *,
        turn: Turn,
        spend: Spend,
        conv_state: Mapping[str, Any],
        holds: AsyncExitStack,
    ) -> Response:
        """``holds``: the request's budget and spend holds, closed once the stream is recorded."""
        assert s.stream is not None
        mine = s.decision.entry_for(s.entry.name) if s.decision is not None else None
        expected = (
            mine.cost
            if mine
            else s.entry.cost_usd(
                req.prompt_tokens_est, turn.max_tokens or s.entry.mean_completion_tokens
            )
        )
        overhead_ms = (s.t_upstream - req.t_start) * 1000
        self.metrics.latency.labels(stage="upstream").observe(time.perf_counter() - s.t_upstream)
        headers = {**self.headers(req, s, turn, expected, overhead_ms), **SSE_HEADERS}
        return StreamingResponse(
            self._relay(req, s, turn, spend, conv_state, holds),
            media_type="text/event-stream",
            headers=headers,
        )

    async def _relay(
        self,
        req: ParsedRequest,
        s: Served,
        turn: Turn,
        spend: Spend,
        conv_state: Mapping[str, Any],
        holds: AsyncExitStack,
    ) -> AsyncIterator[bytes]:
        """Upstream events, one by one, in the spec's shape; our usage chunk; ``[DONE]``."""
        assert s.stream is not None
        served = s.entry.name
        usage: Any = None
        texts: list[str] = []
        meta: dict[str, Any] = {"id": "chatcmpl-" + req.request_id, "created": int(time.time())}
        obj_name = "chat.completion.chunk" if req.kind == "chat" else "text_completion"
        failed = truncated = False
        cap = StreamCap(turn.max_tokens)
        try:
            async for data in s.stream:
                if data == DONE:
                    self.health.record_success(served)
                    break
                try:
                    obj = json.loads(data)
                except ValueError:
                    continue  # not JSON: nothing a client could use
                if not isinstance(obj, dict):
                    continue
                if "error" in obj or obj.get("object") == "error":
                    failed = True
                    msg = error_message(500, data.encode())
                    self.health.record_failure(served, UpstreamFailure("cut", msg))
                    yield sse_error(f"{served} failed mid-stream: {msg}")
                    break
                meta["id"] = obj.get("id", meta["id"])
                meta["created"] = obj.get("created", meta["created"])
                if obj.get("usage"):
                    usage = obj["usage"]
                choices = obj.get("choices") or []
                if not choices:
                    continue  # an upstream usage-only chunk: ours comes last, in the spec shape
                for ch in choices:
                    if ch.get("finish_reason") == "length":
                        truncated = True
                    if req.kind == "chat":
                        piece = (ch.get("delta") or {}).get("content")
                    else:
                        piece = ch.get("text")
                    if piece:
                        kept = cap.admit(int(ch.get("index") or 0), str(piece))
                        if kept != piece:  # the backend ignored max_tokens: cut here
                            if req.kind == "chat":
                                ch["delta"]["content"] = kept
                            else:
                                ch["text"] = kept
                            ch["finish_reason"] = "length"
                            truncated = True
                        piece = kept
                    if piece:
                        texts.append(piece)
                obj["model"] = served
                if req.include_usage:
                    obj["usage"] = None
                else:
                    obj.pop("usage", None)
                yield b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
                if cap.done:
                    break  # the whole grant is delivered: nothing more goes to the client
            else:
                if isinstance(s.stream, UpstreamStream):
                    raise UpstreamFailure("cut", "backend closed the stream before [DONE]")
        except UpstreamFailure as f:
            failed = True
            self.health.record_failure(served, f)
            self.metrics.upstream_errors.labels(model=served, kind=f.kind).inc()
            yield sse_error(f"{served} stream failed: {f.message}")
        finally:
            await s.stream.aclose()
            # Recorded even when the client went away mid-stream (tokens were still spent).
            u = usage if isinstance(usage, dict) else None
            if cap.cut or (u is not None and cap.limit is not None and _completion(u) > cap.limit):
                # What reached the client, counted by the gateway's tokenizer: never over the cap.
                u = None
            task = asyncio.create_task(
                self._record_stream(
                    req, s, turn, spend, conv_state, holds, u, list(texts), truncated
                )
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # Spend is on disk before [DONE] reaches the client (shielded: a client that leaves now
        # does not cancel the write).
        await asyncio.shield(task)
        if not failed and req.include_usage:
            final = await self.usage(req, usage, texts)
            chunk = {
                "id": meta["id"],
                "object": obj_name,
                "created": meta["created"],
                "model": served,
                "choices": [],
                "usage": final,
            }
            yield b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def _record_stream(
        self,
        req: ParsedRequest,
        s: Served,
        turn: Turn,
        spend: Spend,
        conv_state: Mapping[str, Any],
        holds: AsyncExitStack,
        usage: dict[str, Any] | None,
        texts: list[str],
        truncated: bool,
    ) -> None:
        try:
            final = await self.usage(req, usage, texts)
            cost = s.entry.cost_usd(final["prompt_tokens"], final["completion_tokens"])
            await self.record(req, s, turn, spend, final, cost, conv_state, truncated=truncated)
        except Exception:
            log.exception("could not record a streamed request")
            # Without a usage count the whole grant is booked: never under-count a budget.
            used = turn.grant.granted if turn.grant is not None else 0
            await turn.settle(used=used, truncated=truncated, turn=True)
        finally:
            await holds.aclose()

    # --- the record
    async def record(
        self,
        req: ParsedRequest,
        s: Served,
        turn: Turn,
        spend: Spend,
        usage: dict[str, Any],
        cost: float,
        conv_state: Mapping[str, Any],
        *,
        truncated: bool,
    ) -> None:
        name = s.entry.name
        self.metrics.tokens.labels(model=name, kind="prompt").inc(usage["prompt_tokens"])
        self.metrics.tokens.labels(model=name, kind="completion").inc(usage["completion_tokens"])
        self.metrics.cost.labels(model=name).inc(cost)
        self.metrics.latency.labels(stage="total").observe(time.perf_counter() - req.t_start)
        await spend.settle(cost_usd=cost, total_tokens=usage["total_tokens"])
        left = await turn.settle(used=int(usage["completion_tokens"]), truncated=truncated)
        if self.requests_log is not None:
            self.requests_log.add(
                request_record(
                    req,
                    s,
                    key_id=spend.key_id,
                    usage=usage,
                    cost=cost,
                    budget_granted=turn.grant.granted if turn.grant is not None else None,
                    budget_left=left,
                )
            )
        if req.conv_key:
            # Stick to the router's choice, not to a fallback that stood in for it: once the
            # primary recovers the conversation goes back to it.
            sticky = s.decision.model if s.fallbacks and s.decision is not None else name
            state = {
                "model": sticky,
                "tokens": int(conv_state.get("tokens", 0)) + int(usage["total_tokens"]),
                "turns": int(conv_state.get("turns", 0)) + 1,
            }
            await self.store.set_json(req.conv_key, state, ttl_s=self.conversation_ttl_s)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def request_record(
    req: ParsedRequest,
    served: Served,
    *,
    key_id: int | None,
    usage: dict[str, Any],
    cost: float,
    budget_granted: int | None,
    budget_left: int | None,
) -> RequestRecord:
    """The record of one served request (called once its usage and cost are known)."""
    d = served.decision
    mine = d.entry_for(served.entry.name) if d is not None else None
    conv = req.conv_key
    return RequestRecord(
        kind=req.kind,
        model=served.entry.name,
        prompt_tokens=int(usage["prompt_tokens"]),
        completion_tokens=int(usage["completion_tokens"]),
        cost_usd=float(cost),
        query_sha256=text_sha256(req.prompt_text),
        key_id=key_id,
        chosen=d.model if d is not None else None,
        router=d.router if d is not None else None,
        lam=float(d.lam) if d is not None else None,
        p_correct=mine.p_correct if mine is not None else None,
        candidates=(
            {r.model: [round(r.p_correct, 6), r.cost] for r in d.ranked} if d is not None else None
        ),
        fallbacks=served.fallbacks,
        # The conversation key holds the caller's scope and id: store a digest, not the id.
        conversation=hashlib.sha256(conv.encode()).hexdigest()[:16] if conv else None,
        budget_total=req.total_tokens,
        budget_granted=budget_granted or None,
        budget_left=budget_left,
    )


def _cut_json(
    req: ParsedRequest, body: dict[str, Any], usage: dict[str, int], limit: int
) -> tuple[dict[str, int], bool]:
    """A backend that ignored ``max_tokens``: each choice cut to ``limit`` tokens (the gateway's
    tokenizer), ``finish_reason: "length"``; the usage becomes what is delivered. Returns the
    usage and whether any choice was cut."""
    delivered = 0
    cut = False
    for ch in body.get("choices") or []:
        msg = ch.get("message") if req.kind == "chat" else None
        text = str((msg or {}).get("content") or "") if req.kind == "chat" else ch.get("text")
        kept, n = truncate_to_tokens(str(text or ""), limit)
        delivered += n
        if kept != text:
            if isinstance(msg, dict):
                msg["content"] = kept
            else:
                ch["text"] = kept
            ch["finish_reason"] = "length"
            cut = True
    log.warning(
        "%s sent %d completion tokens for max_tokens %d: cut to %d",
        req.model,
        usage["completion_tokens"],
        limit,
        delivered,
    )
    p = usage["prompt_tokens"]
    return {**usage, "completion_tokens": delivered, "total_tokens": p + delivered}, cut


def _completion(usage: dict[str, Any]) -> int:
    c = usage.get("completion_tokens")
    return c if isinstance(c, int) else 0


class StreamCap:
    """Cuts a stream at ``limit`` tokens per choice, for backends that ignore ``max_tokens``.

    Counting uses the gateway's tokenizer (``service.tokens``) on the text relayed so far, only
    when it could be over the limit: a token has at least one byte, so the count since the last
    check grows by at most the new bytes."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.cut = False
        self._text: dict[int, str] = {}
        self._bound: dict[int, int] = {}  # upper bound on each choice's token count
        self._closed: set[int] = set()

    @property
    def done(self) -> bool:
        return self.cut and len(self._closed) >= len(self._text)

    def admit(self, index: int, piece: str) -> str:
        """The part of ``piece`` that fits under the limit ("" once the choice is cut)."""
        if self.limit is None:
            return piece
        if index in self._closed:
            return ""
        text = self._text.get(index, "") + piece
        bound = self._bound.get(index, 0) + len(piece.encode()) + 1
        if bound > self.limit:
            kept, n = truncate_to_tokens(text, self.limit)
            if len(kept) < len(text):
                self.cut = True
                self._closed.add(index)
                prior = len(self._text.get(index, ""))
                self._text[index] = kept
                return kept[prior:] if len(kept) > prior else ""
            bound = n
        self._text[index], self._bound[index] = text, bound
        return piece


def sse_error(message: str) -> bytes:
    body = {
        "error": {
            "message": message,
            "type": "upstream_error",
            "param": None,
            "code": "upstream_error",
        }
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"
