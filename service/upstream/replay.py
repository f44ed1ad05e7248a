"""The replay backend: a data-set model's real recorded answer to a data-set prompt.

Clearly labelled: responses carry ``system_fingerprint: "junction-replay"`` and the gateway sets
``x-junction-backend: replay``. It never invents an answer: a prompt the data set does not hold
makes the model unusable for that request (routing skips it; asking for it by name is a 400).
It honours ``max_tokens`` as a model does: a recorded answer longer than ``max_tokens`` tokens
(SmolLM2's tokenizer, the one the data set was counted with) is cut at that many tokens and
finishes with ``"length"``.

Usage::

    replay = ReplayBackend(loader=ReplayStore.load)
    if replay.available("Yi-6B", prompt):
        body = replay.complete(entry, answer, chat=True, prompt_tokens=12, max_tokens=64)
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from service.routing.registry import PoolEntry
from service.tokens import truncate_to_tokens
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
        self,
        entry: PoolEntry,
        answer: Answer,
        *,
        chat: bool,
        prompt_tokens: int,
        max_tokens: int | None = None,
    ) -> dict[str, Any]:
        text, completion, finish = _cut(answer, max_tokens)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }
        choice: dict[str, Any] = (
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
            if chat
            else {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
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

    def stream(self, body: dict[str, Any], *, chat: bool) -> ReplayStream:
        """The events of a streamed response carrying the answer ``complete`` made as ``body``."""
        import json

        choice = body["choices"][0]
        text = str(choice["message"]["content"] if chat else choice["text"])
        base = {
            "id": body["id"],
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": body["created"],
            "model": body["model"],
            "system_fingerprint": FINGERPRINT,
        }
        words = text.split(" ") if text else []
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
        events.append(
            json.dumps({**base, "choices": [{**end, "finish_reason": choice["finish_reason"]}]})
        )
        events.append(json.dumps({**base, "choices": [], "usage": body["usage"]}))
        events.append(DONE)
        return ReplayStream(events)


def _cut(answer: Answer, max_tokens: int | None) -> tuple[str, int, str]:
    """(text, completion tokens, finish reason) of a recorded answer under ``max_tokens``."""
    if max_tokens is None or answer.completion_tokens <= max_tokens:
        # The recorded count is the data set's own (SmolLM2's tokenizer): within the cap.
        return answer.response, answer.completion_tokens, "stop"
    text, n = truncate_to_tokens(answer.response, max_tokens)
    if text == answer.response:  # the recount fits after all: nothing was cut
        return text, n, "stop"
    return text, n, "length"


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
