"""A fake backend that speaks vLLM's OpenAI protocol, with switchable faults.

Used by the tests (fault injection: timeouts, 5xx, streams cut mid-way, both vLLM error shapes,
a final usage chunk with non-empty ``choices``) and by ``junction bench gateway`` as the fast
backend both the gateway and LiteLLM sit in front of. It is an aiohttp server: a real socket, so
the gateway's real upstream client is exercised.

Usage::

    fake = FakeVLLM(model="fake-a")
    url = fake.start_in_thread()           # "http://127.0.0.1:PORT/v1"
    fake.faults.fail_times, fake.faults.fail_status = 1, 503
    fake.stop()
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web

_VLLM_ERROR_TYPES = {
    400: "BadRequestError",
    401: "Unauthorized",
    404: "NotFoundError",
    422: "BadRequestError",
    429: "RateLimitError",
    501: "NotImplementedError",
    503: "ServiceUnavailableError",
}


@dataclass
class Faults:
    fail_times: int = 0  # the next N requests fail with fail_status
    fail_status: int = 500
    error_shape: str = "nested"  # "nested" (current vLLM) | "flat" (older vLLM)
    delay_s: float = 0.0  # before the response headers
    chunk_delay_s: float = 0.0
    cut_after_chunks: int | None = None  # close the stream after N content chunks
    error_after_chunks: int | None = None  # send an error event after N content chunks
    omit_usage: bool = False  # ignore stream_options.include_usage (llama.cpp does)
    usage_with_choices: bool = False  # final usage chunk carries a non-empty choices list
    hang: bool = False  # accept and never answer
    # Failing in bursts: 503 for burst_len_s out of every burst_period_s (wall clock).
    burst_period_s: float = 0.0
    burst_len_s: float = 0.0
    ignore_max_tokens: bool = False  # generate the whole reply whatever max_tokens says


class FakeVLLM:
    def __init__(self, *, model: str = "fake-model", reply: str | None = None) -> None:
        self.model = model
        self.reply = reply
        self.faults = Faults()
        self.requests: deque[dict[str, Any]] = deque(maxlen=1000)
        self.count = 0
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- protocol
    def _text(self, body: dict[str, Any]) -> str:
        if self.reply is not None:
            return self.reply
        msgs = body.get("messages") or []
        last = msgs[-1].get("content") if msgs else body.get("prompt", "")
        if isinstance(last, list):
            last = " ".join(p.get("text", "") for p in last if isinstance(p, dict))
        return f"{self.model} says: {str(last)[:60]}"

    def _error(self, status: int, message: str) -> web.Response:
        # vLLM's shapes: ``type`` is the exception name for the status, ``code`` the int status.
        kind = _VLLM_ERROR_TYPES.get(status, "InternalServerError")
        if self.faults.error_shape == "flat":
            body: dict[str, Any] = {
                "object": "error",
                "message": message,
                "type": kind,
                "param": None,
                "code": status,
            }
        else:
            body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
        return web.json_response(body, status=status)

    async def _maybe_fault(self) -> web.Response | None:
        f = self.faults
        if f.hang:
            await asyncio.sleep(3600)
        if f.delay_s:
            await asyncio.sleep(f.delay_s)
        if f.fail_times > 0:
            f.fail_times -= 1
            return self._error(f.fail_status, f"injected failure {f.fail_status}")
        if f.burst_period_s and time.time() % f.burst_period_s < f.burst_len_s:
            return self._error(503, "injected burst failure")
        return None

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.model,
                        "object": "model",
                        "created": 0,
                        "owned_by": "vllm",
                        "root": self.model,
                        "parent": None,
                        "max_model_len": 4096,
                    }
                ],
            }
        )

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(status=200)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _complete(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return self._error(400, "invalid JSON")
        self.count += 1
        self.requests.append(body)
        fault = await self._maybe_fault()
        if fault is not None:
            return fault
        if self.model != "*" and body.get("model") != self.model:
            return web.json_response(
                {
                    "error": {
                        "message": f"The model `{body.get('model')}` does not exist.",
                        "type": "NotFoundError",
                        "param": None,
                        "code": 404,
                    }
                },
                status=404,
            )
        served = str(body.get("model")) if self.model == "*" else self.model
        text = self._text(body)
        words = text.split(" ")
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        finish = "stop"
        if isinstance(limit, int) and limit < len(words) and not self.faults.ignore_max_tokens:
            words, finish = words[:limit], "length"
        prompt_tokens = len(json.dumps(body.get("messages") or body.get("prompt"))) // 4
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        if not body.get("stream"):
            out = " ".join(words)
            choice: dict[str, Any] = (
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": out},
                    "logprobs": None,
                    "finish_reason": finish,
                    "stop_reason": None,
                }
                if chat
                else {
                    "index": 0,
                    "text": out,
                    "logprobs": None,
                    "finish_reason": finish,
                    "stop_reason": None,
                }
            )
            return web.json_response(
                {
                    "id": rid,
                    "object": "chat.completion" if chat else "text_completion",
                    "created": created,
                    "model": served,
                    "choices": [choice],
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        obj = "chat.completion.chunk" if chat else "text_completion"
        include_usage = (
            bool((body.get("stream_options") or {}).get("include_usage"))
            and not self.faults.omit_usage
        )

        def chunk(delta: dict[str, Any] | str, finish_reason: str | None) -> bytes:
            ch: dict[str, Any] = (
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                if chat
                else {"index": 0, "text": delta, "logprobs": None, "finish_reason": finish_reason}
            )
            d: dict[str, Any] = {
                "id": rid,
                "object": obj,
                "created": created,
                "model": served,
                "choices": [ch],
            }
            if include_usage:
                d["usage"] = None
            return b"data: " + json.dumps(d).encode() + b"\n\n"

        if chat:
            await resp.write(chunk({"role": "assistant", "content": ""}, None))
        for i, w in enumerate(words):
            if self.faults.cut_after_chunks is not None and i >= self.faults.cut_after_chunks:
                # Let the client read what was sent, then cut the connection: no [DONE], no error.
                await asyncio.sleep(0.2)
                assert request.transport is not None
                request.transport.close()
                return resp
            if self.faults.error_after_chunks is not None and i >= self.faults.error_after_chunks:
                err = {
                    "error": {
                        "message": "engine died",
                        "type": "InternalServerError",
                        "param": None,
                        "code": 500,
                    }
                }
                await resp.write(b"data: " + json.dumps(err).encode() + b"\n\n")
                await resp.write(b"data: [DONE]\n\n")
                return resp
            piece = w if i == 0 else " " + w
            await resp.write(chunk({"content": piece} if chat else piece, None))
            if self.faults.chunk_delay_s:
                await asyncio.sleep(self.faults.chunk_delay_s)
        last = chunk({} if chat else "", finish)
        if include_usage and self.faults.usage_with_choices:
            # A final chunk carrying both the finish and the usage (LiteLLM issue #36168).
            d = json.loads(last[6:])
            d["usage"] = usage
            await resp.write(b"data: " + json.dumps(d).encode() + b"\n\n")
        else:
            await resp.write(last)
            if include_usage:
                d2 = {
                    "id": rid,
                    "object": obj,
                    "created": created,
                    "model": served,
                    "choices": [],
                    "usage": usage,
                }
                await resp.write(b"data: " + json.dumps(d2).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    # --- lifecycle
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return f"http://{host}:{self.port}/v1"

    async def stop_async(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def start_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> str:
        ready = threading.Event()
        box: dict[str, str] = {}

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            box["url"] = loop.run_until_complete(self.start(host, port))
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-vllm-{self.model}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake backend did not start")
        return box["url"]

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None
            self._thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def main() -> None:
    """``python -m service.cli.fake_vllm --port P [--model NAME|*]``: serve until killed."""
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", default="*")
    p.add_argument("--reply", default=None)
    p.add_argument("--delay", type=float, default=0.0, help="seconds before the headers")
    p.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    p.add_argument(
        "--fail-burst", default="", help="PERIOD,LEN: 503s for LEN seconds of every PERIOD"
    )
    args = p.parse_args()
    fake = FakeVLLM(model=args.model, reply=args.reply)
    fake.faults.delay_s, fake.faults.chunk_delay_s = args.delay, args.chunk_delay
    if args.fail_burst:
        period, length = (float(x) for x in args.fail_burst.split(","))
        fake.faults.burst_period_s, fake.faults.burst_len_s = period, length

    async def run() -> None:
        await fake.start(port=args.port)
        await asyncio.Event().wait()

    try:
        import uvloop
    except ImportError:
        asyncio.run(run())
    else:
        uvloop.run(run())


if __name__ == "__main__":
    main()
