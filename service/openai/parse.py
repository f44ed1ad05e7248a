"""Step 1 of a request, parse: the raw body and headers become one frozen ``ParsedRequest``.

Everything later steps read about the request is decided here, once: the text the router sees
(``routing_text``, the one rule that chat and ``POST /v1/route`` share), the text a replay
backend looks up, the prompt-token estimate, the routing options (body first, ``x-junction-*``
headers filling the rest), the conversation it belongs to (only when the client names one) and
its token budget. A bad request is a 400 here, before any expensive work.

Usage::

    req = parse_request(raw, headers, principal, kind="chat")
    req.route_text, req.conv_key, req.max_tokens
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from service.auth import Principal
from service.errors import InvalidRequest
from service.jsonbody import parse_json_object
from service.openai.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    RoutingOptions,
    parse_routing,
    text_of,
)
from service.tokens import estimate_tokens

Kind = Literal["chat", "completion"]
# A short last turn is routed with this much of the user turn before it.
SHORT_TURN_CHARS = 200
PREVIOUS_TURN_CHARS = 300


@dataclass(frozen=True)
class ConversationText:
    """What routing reads of a list of messages (see ``conversation_text``)."""

    prompt: str  # the last user turn (the last message when no user spoke): what replay looks up
    route: str  # what the router embeds
    past_user: tuple[str, ...]  # the user turns before the last


def conversation_text(messages: Sequence[ChatMessage]) -> ConversationText:
    """The routing-text rule, shared by chat completions and ``POST /v1/route`` so both predict
    the same model: the last user turn, plus the tail of the user turn before it when the last
    one is short ("commit it" after a coding turn should not look like small talk)."""
    users = [text_of(m.content) for m in messages if m.role == "user"]
    prompt = users[-1] if users else text_of(messages[-1].content)
    route = prompt
    if len(users) > 1 and len(prompt) < SHORT_TURN_CHARS:
        route = users[-2][-PREVIOUS_TURN_CHARS:] + "\n" + prompt
    return ConversationText(prompt=prompt, route=route, past_user=tuple(users[:-1]))


@dataclass(frozen=True)
class ParsedRequest:
    """One chat or text-completion request as every later step reads it; never rewritten."""

    kind: Kind
    body: Mapping[str, Any]  # the client's JSON object (read-only view)
    model: str
    stream: bool
    include_usage: bool
    route_text: str
    prompt_text: str  # what the replay backend looks up: the last user turn, or the prompt
    message_texts: tuple[str, ...]
    roles: tuple[str, ...] | None  # chat roles, one per message text (None for completions)
    prompt_tokens_est: int
    routing: RoutingOptions
    conv_key: str | None
    total_tokens: int | None  # the conversation's token budget, when the client sets one
    max_tokens: int | None  # what the client asked for (a budget grant may lower it)
    request_id: str
    t_start: float
    past_user_texts: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return "/chat/completions" if self.kind == "chat" else "/completions"


def _conversation_id(
    req: ChatCompletionRequest | CompletionRequest, headers: Mapping[str, str]
) -> str | None:
    # A conversation exists only when the client names it (body or header). It used to be
    # implied by the first message too: independent "hi" requests then shared one budget and one
    # sticky model (issue 13).
    conv_id = (
        (req.budget.conversation_id if req.budget else None)
        or headers.get("x-conversation-id")
        or headers.get("x-session-id")
    )
    if conv_id is not None and not 0 < len(conv_id.strip()) <= 200:
        raise InvalidRequest("a conversation id has 1 to 200 characters", param="x-conversation-id")
    return conv_id


def _total_tokens(
    req: ChatCompletionRequest | CompletionRequest, headers: Mapping[str, str]
) -> int | None:
    total = req.budget.total_tokens if req.budget else None
    if total is None and headers.get("x-junction-budget-tokens"):
        try:
            total = int(headers["x-junction-budget-tokens"])
        except ValueError:
            total = 0
        if not 1 <= total <= 2**31 - 1:
            raise InvalidRequest(
                "x-junction-budget-tokens must be a positive integer",
                param="x-junction-budget-tokens",
            )
    return total


def parse_request(
    raw: bytes, headers: Mapping[str, str], principal: Principal, kind: Kind
) -> ParsedRequest:
    t_start = time.perf_counter()
    body = parse_json_object(raw)
    req: ChatCompletionRequest | CompletionRequest
    roles: tuple[str, ...] | None = None
    if kind == "chat":
        req = ChatCompletionRequest.model_validate(body)
        texts = tuple(text_of(m.content) for m in req.messages)
        conv = conversation_text(req.messages)
        prompt_text, route_text, past = conv.prompt, conv.route, conv.past_user
        raw_roles = tuple(str(m.get("role")) for m in body.get("messages") or [])
        roles = raw_roles if len(raw_roles) == len(texts) else None
    else:
        req = CompletionRequest.model_validate(body)
        prompt = req.prompt
        if isinstance(prompt, str):
            prompt_text = prompt
        elif prompt and isinstance(prompt[0], str):
            prompt_text = "\n".join(str(p) for p in prompt)
        else:
            raise InvalidRequest("token-id prompts cannot be routed; send text", param="prompt")
        texts, route_text, past = (prompt_text,), prompt_text, ()
    routing = parse_routing(req.routing, headers)  # checked before the conversation's fields
    conv_id = _conversation_id(req, headers)
    total_tokens = _total_tokens(req, headers)
    stream = bool(req.stream)
    return ParsedRequest(
        kind=kind,
        body=MappingProxyType(body),
        model=req.model,
        stream=stream,
        include_usage=bool(stream and req.stream_options and req.stream_options.include_usage),
        route_text=route_text,
        prompt_text=prompt_text,
        message_texts=texts,
        roles=roles,
        prompt_tokens_est=sum(estimate_tokens(t) for t in texts),
        routing=routing,
        conv_key=f"conv:{principal.scope}:{conv_id}" if conv_id else None,
        total_tokens=total_tokens,
        max_tokens=req.max_completion_tokens or req.max_tokens,
        request_id=headers.get("x-request-id") or uuid.uuid4().hex,
        t_start=t_start,
        past_user_texts=past,
    )
