"""The replay backend: a data-set model's real recorded answer to a data-set prompt.

Clearly labelled: responses carry ``system_fingerprint: "junction-replay"`` and the gateway sets
``x-junction-backend: replay``. It never invents an answer: a prompt the data set does not hold
makes the model unusable for that request (routing skips it; asking for it by name is a 400).

Usage::

    replay = ReplayBackend(loader=ReplayStore.load)
    if replay.available("Yi-6B", prompt): body = replay.complete(entry, request, chat=True, prompt=prompt)
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from service.routing.registry import PoolEntry
from service.upstream.client import DONE

FINGERPRINT = "junction-replay"


class Answer(Protocol):
    response: str
    completion_tokens: int


class Store(Protocol):
    def answer(self, model: str, prompt_text: str) -> Any: ...


def _default_loader() -> Store:
    from training.data.replay import ReplayStore

    return ReplayStore.load()


class ReplayBackend:
    def __init__(self, loader: Callable[[], Store] = _default_loader) -> None:
        self._loader = loader
        self._store: Store | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._store is None:
                self._store = self._loader()

    def lookup(self, model: str, prompt: str) -> Answer | None:
        if self._store is None:
            self.load()
        assert self._store is not None
        found: Answer | None = self._store.answer(model, prompt)
        return found

    def available(self, model: str, prompt: str | None) -> bool:
        return prompt is not None and self.lookup(model, prompt) is not None

    def complete(
        self, entry: PoolEntry, answer: Answer, *, chat: bool, prompt_tokens: int
    ) -> dict[str, Any]:
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": prompt_tokens + answer.completion_tokens,
        }
        choice: dict[str, Any] = (
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.response},
                "logprobs": None,
                "finish_reason": "stop",
            }
            if chat
            else {"index": 0, "text": answer.response, "logprobs": None, "finish_reason": "stop"}
        )
        return {
            "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": entry.name,
            "system_fingerprint": FINGERPRINT,
            "choices": [choice],
            "usage": usage,
        }

    def stream(
        self, entry: PoolEntry, answer: Answer, *, chat: bool, prompt_tokens: int
    ) -> ReplayStream:
        import json

        body = self.complete(entry, answer, chat=chat, prompt_tokens=prompt_tokens)
        base = {
            "id": body["id"],
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": body["created"],
            "model": entry.name,
            "system_fingerprint": FINGERPRINT,
        }
        words = answer.response.split(" ")
        events: list[str] = []
        if chat:
            events.append(
                json.dumps(
                    {
                        **base,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {"role": "assistant", "content": ""},
                                "finish_reason": None,
                            }
                        ],
                    }
                )
            )
        for i, w in enumerate(words):
            piece = w if i == 0 else " " + w
            ch = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
            events.append(json.dumps({**base, "choices": [{**ch, "finish_reason": None}]}))
        end = {"index": 0, "delta": {}} if chat else {"index": 0, "text": ""}
        events.append(json.dumps({**base, "choices": [{**end, "finish_reason": "stop"}]}))
        events.append(json.dumps({**base, "choices": [], "usage": body["usage"]}))
        events.append(DONE)
        return ReplayStream(events)


class ReplayStream:
    """The same iteration interface as ``UpstreamStream``."""

    def __init__(self, events: list[str]) -> None:
        self._events = iter(events)

    def __aiter__(self) -> ReplayStream:
        return self

    async def __anext__(self) -> str:
        try:
            return next(self._events)
        except StopIteration:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        return None
