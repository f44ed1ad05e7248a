"""Serving chat and text completions: parse, route, call upstream with retry and fallback, relay.

The order of one request: parse and validate (400 before anything else), conversation state,
the turn's token budget (a conversation with ``budget.total_tokens``: the TAB policy picks this
turn's ``max_tokens``, clamped to what the client asked and to what is left, and reserves it
atomically in the budget ledger (Redis, else the database); the real completion tokens are
settled afterwards, and an exhausted conversation gets a 429 ``conversation_budget_exceeded``),
routing (or the concrete model), admission (rate limits, spend reservation), upstream attempts
(retry once on a transient failure, then the next candidate nearest in LOCUS space), then the
response. Every decision is made before the first byte; after it, a failure becomes an SSE error
event followed by ``[DONE]``.

Usage::

    serving = OpenAIServing(engine=..., upstream=..., health=..., replay=..., accounting=...,
                            store=..., metrics=..., settings=..., budgets=...)
    response = await serving.create(raw_body, headers, principal, kind="chat")
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from fastapi.responses import JSONResponse, StreamingResponse
from starlette.responses import Response

from service.accounting import Accounting, Reservation
from service.auth import Principal
from service.errors import (
    BudgetExceeded,
    InvalidRequest,
    ModelNotFound,
    NoHealthyBackend,
    ReplayMiss,
    UpstreamError,
    UpstreamTimeout,
)
from service.jsonbody import parse_json_object
from service.metrics import Metrics
from service.openai.protocol import (
    AUTO_MODELS,
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    ModelList,
    RoutingOptions,
    parse_routing,
    text_of,
)
from service.request_log import RequestLog, request_record
from service.routing.engine import Decision, RouteQuery, RoutingEngine
from service.routing.registry import PoolEntry
from service.settings import Settings
from service.state import BudgetGrant, BudgetLedger, BudgetLedgerStore, StateStore
from service.tokens import (
    count_prompt_tokens,
    count_tokens,
    estimate_tokens,
    truncate_to_tokens,
)
from service.upstream.client import (
    DONE,
    UpstreamClient,
    UpstreamFailure,
    UpstreamStream,
    error_message,
)
from service.upstream.health import BackendHealth
from service.upstream.replay import ReplayBackend, ReplayStream

if TYPE_CHECKING:
    from budget_controller import BudgetController

log = logging.getLogger(__name__)
Kind = Literal["chat", "completion"]
# Reserved against a spend budget when the request sets no max_tokens.
WORST_CASE_COMPLETION_TOKENS = 4096
GATEWAY_FIELDS = ("routing", "budget")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def routing_from_headers(opts: RoutingOptions | None, headers: Mapping[str, str]) -> RoutingOptions:
    """Body ``routing`` wins; the ``x-junction-*`` routing headers fill what it leaves out."""
    return parse_routing(opts, headers)


@dataclass
class Prepared:
    kind: Kind
    body: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool
    route_text: str
    prompt_text: str  # what the replay backend looks up: the last user turn, or the prompt
    message_texts: list[str]
    prompt_tokens_est: int
    routing: RoutingOptions
    conv_key: str | None
    total_tokens: int | None
    max_tokens: int | None
    request_id: str
    t_start: float
    past_user_texts: list[str] = field(default_factory=list)
    # Set when the conversation has a token budget (see OpenAIServing._reserve_budget).
    budget_key: str | None = None
    budget_grant: int = 0
    budget_left: int | None = None
    truncated: bool = False

    @property
    def path(self) -> str:
        return "/chat/completions" if self.kind == "chat" else "/completions"


@dataclass
class Served:
    entry: PoolEntry
    decision: Decision | None
    fallbacks: int
    t_upstream: float  # when the successful attempt started
    body: dict[str, Any] | None = None
    stream: UpstreamStream | ReplayStream | None = None
    conv_state: dict[str, Any] = field(default_factory=dict)


class OpenAIServing:
    def __init__(
        self,
        *,
        engine: RoutingEngine,
        upstream: UpstreamClient,
        health: BackendHealth,
        replay: ReplayBackend,
        accounting: Accounting,
        store: StateStore,
        metrics: Metrics,
        settings: Settings,
        budget_controller: BudgetController | None = None,
        budgets: BudgetLedgerStore | None = None,
        requests_log: RequestLog | None = None,
    ) -> None:
        self.engine = engine
        self.requests_log = requests_log  # one durable record per served request (dashboard)
        self.upstream = upstream
        self.health = health
        self.replay = replay
        self.accounting = accounting
        self.store = store
        # Conversation budget ledgers: the state store unless the app keeps them elsewhere.
        self.budgets: BudgetLedgerStore = budgets if budgets is not None else store
        self.metrics = metrics
        self.settings = settings
        self._tasks: set[asyncio.Task[None]] = set()
        self._budget_ctl: BudgetController | None = budget_controller
        self._budget_ctl_tried = budget_controller is not None
        self._budget_ctl_lock = asyncio.Lock()

    # --- /v1/models
    def models(self) -> ModelList:
        now = int(time.time())
        cards = [ModelCard(id=AUTO_MODELS[0], created=now, owned_by="junction", backend="router")]
        for e in self.engine.pool.entries:
            cards.append(
                ModelCard(
                    id=e.name,
                    created=e.created,
                    owned_by="junction",
                    backend=e.backend.kind,
                    pricing={
                        "input_per_mtok": e.input_per_mtok,
                        "output_per_mtok": e.output_per_mtok,
                    },
                )
            )
        return ModelList(data=cards)

    # --- parsing
    def prepare(
        self, raw: bytes, headers: Mapping[str, str], principal: Principal, kind: Kind
    ) -> Prepared:
        t_start = time.perf_counter()
        body = parse_json_object(raw)
        req: ChatCompletionRequest | CompletionRequest
        if kind == "chat":
            req = ChatCompletionRequest.model_validate(body)
            texts = [text_of(m.content) for m in req.messages]
            users = [text_of(m.content) for m in req.messages if m.role == "user"]
            prompt_text = users[-1] if users else texts[-1]
            # Route on the last user turn plus a little of the one before ("commit it" after a
            # coding turn should not look like small talk).
            route_text = prompt_text
            if len(users) > 1 and len(prompt_text) < 200:
                route_text = users[-2][-300:] + "\n" + prompt_text
        else:
            req = CompletionRequest.model_validate(body)
            prompt = req.prompt
            if isinstance(prompt, str):
                prompt_text = prompt
            elif prompt and isinstance(prompt[0], str):
                prompt_text = "\n".join(str(p) for p in prompt)
            else:
                raise InvalidRequest("token-id prompts cannot be routed; send text", param="prompt")
            texts, route_text = [prompt_text], prompt_text
            users = [prompt_text]
        routing = routing_from_headers(req.routing, headers)
        # A conversation exists only when the client names it (body or header). It used to be
        # implied by the first message too: independent "hi" requests then shared one budget
        # and one sticky model (issue 13).
        conv_id = (
            (req.budget.conversation_id if req.budget else None)
            or headers.get("x-conversation-id")
            or headers.get("x-session-id")
        )
        if conv_id is not None and not 0 < len(conv_id.strip()) <= 200:
            raise InvalidRequest(
                "a conversation id has 1 to 200 characters", param="x-conversation-id"
            )
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
        requested = req.max_completion_tokens or req.max_tokens
        stream = bool(req.stream)
        return Prepared(
            kind=kind,
            body=body,
            model=req.model,
            stream=stream,
            include_usage=bool(stream and req.stream_options and req.stream_options.include_usage),
            route_text=route_text,
            prompt_text=prompt_text,
            message_texts=texts,
            prompt_tokens_est=sum(estimate_tokens(t) for t in texts),
            routing=routing,
            conv_key=f"conv:{principal.scope}:{conv_id}" if conv_id else None,
            total_tokens=total,
            max_tokens=requested,
            request_id=headers.get("x-request-id") or uuid.uuid4().hex,
            t_start=t_start,
            past_user_texts=users[:-1],
        )

    # --- the request
    async def create(
        self, raw: bytes, headers: Mapping[str, str], principal: Principal, *, kind: Kind
    ) -> Response:
        prep = self.prepare(raw, headers, principal, kind)
        state = (await self.store.get_json(prep.conv_key)) if prep.conv_key else None
        state = state or {}
        if prep.total_tokens is not None:
            await self._reserve_budget(prep)
        try:
            order, decision = await self._choose(prep, state.get("model"))
            pool = self.engine.pool
            entries = [e for e in (pool.get(n) for n in order) if e is not None]
            completion = prep.max_tokens or WORST_CASE_COMPLETION_TOKENS
            # The prompt estimate (4 chars a token) misses chat-template tokens: reserve generously.
            prompt_worst = 2 * prep.prompt_tokens_est + 8 * len(prep.message_texts)
            worst = max((e.cost_usd(prompt_worst, completion) for e in entries), default=0.0)
            # Tokens per minute are reserved as OpenAI counts them: the prompt estimate plus
            # the completion the client allows; settled with the real usage.
            reservation = await self.accounting.admit(
                principal,
                worst_cost_usd=worst,
                tokens=prep.prompt_tokens_est + (prep.max_tokens or 0),
            )
        except BaseException:
            await self._settle_budget(prep, used=0, turn=False)
            raise
        try:
            served = await self._attempt_all(prep, order, decision)
        except BaseException:
            await self.accounting.release(reservation)
            await self._settle_budget(prep, used=0, turn=False)
            raise
        served.conv_state = state
        if served.body is not None:
            return await self._finish_json(prep, served, reservation)
        return self._finish_stream(prep, served, reservation)

    # --- conversation token budgets (TAB)
    async def _controller(self) -> BudgetController | None:
        """The TAB policy, loaded once on first use (off the event loop); None if unavailable."""
        if self._budget_ctl_tried:
            return self._budget_ctl
        async with self._budget_ctl_lock:
            if not self._budget_ctl_tried:
                try:
                    from budget_controller import BudgetController

                    self._budget_ctl = await asyncio.to_thread(BudgetController.load)
                except Exception:
                    log.exception("no TAB budget policy: turns get what is left of the budget")
                self._budget_ctl_tried = True
        return self._budget_ctl

    async def _policy_tokens(self, prep: Prepared, ledger: BudgetLedger | None) -> int | None:
        ctl = await self._controller()
        if ctl is None:
            return None
        past = prep.past_user_texts[-8:]
        X = await self.engine.embedder.embed([prep.prompt_text, *past])
        spent = ledger.spent + ledger.reserved if ledger else 0
        return ctl.choose(
            embedding=X[0],
            past=list(X[1:]),
            turn=max(ledger.turns if ledger else 0, len(prep.past_user_texts)),
            used=spent,
            total=ledger.total if ledger else int(prep.total_tokens or 0),
            any_truncated=bool(ledger and ledger.any_truncated),
            last_truncated=bool(ledger and ledger.last_truncated),
        )

    async def _reserve_budget(self, prep: Prepared) -> None:
        """This turn's max_tokens: the policy's budget, clamped to the client's and to what is
        left, reserved atomically (concurrent turns never hold more than the budget together).

        The budget counts completion tokens, the only ones ``max_tokens`` controls; the first
        turn's ``total_tokens`` fixes a conversation's budget."""
        assert prep.total_tokens is not None
        key = "budget:" + (prep.conv_key or f"request:{prep.request_id}")
        ledger = await self.budgets.budget_get(key)
        total = ledger.total if ledger else prep.total_tokens
        if ledger is not None and ledger.left <= 0:
            raise self._over_budget(ledger)
        wanted = await self._policy_tokens(prep, ledger)
        if wanted is None:
            wanted = ledger.left if ledger else total
        if prep.max_tokens is not None:
            wanted = min(wanted, prep.max_tokens)
        grant: BudgetGrant = await self.budgets.budget_reserve(
            key, total=total, wanted=max(1, wanted), ttl_s=self.settings.conversation_ttl_s
        )
        if grant.granted <= 0:
            raise self._over_budget(grant.ledger)
        prep.budget_key, prep.budget_grant = key, grant.granted
        prep.budget_left = grant.ledger.left
        prep.max_tokens = grant.granted

    @staticmethod
    def _over_budget(ledger: BudgetLedger) -> BudgetExceeded:
        held = f" ({ledger.reserved} held by turns in flight)" if ledger.reserved else ""
        return BudgetExceeded(
            f"conversation token budget of {ledger.total} completion tokens is used up: "
            f"{ledger.spent} spent{held}; start a new conversation or raise its budget",
            code="conversation_budget_exceeded",
            param="budget.total_tokens",
        )

    async def _settle_budget(self, prep: Prepared, *, used: int, turn: bool) -> None:
        if prep.budget_key is None:
            return
        key, granted = prep.budget_key, prep.budget_grant
        prep.budget_key = None  # settle once
        if used > granted:
            log.warning("completion of %d tokens exceeds its max_tokens %d", used, granted)
        ledger = await self.budgets.budget_settle(
            key,
            granted=granted,
            used=used,
            truncated=prep.truncated,
            turn=turn,
            ttl_s=self.settings.conversation_ttl_s,
        )
        if ledger is not None:
            prep.budget_left = ledger.left

    def filters(
        self, prompt_text: str
    ) -> tuple[Callable[[PoolEntry], bool], Callable[[PoolEntry], bool]]:
        """(can answer this prompt, can answer it and is not cooling down)."""

        def can_answer(e: PoolEntry) -> bool:
            if e.backend.kind == "replay":
                return self.replay.available(e.backend.model or e.name, prompt_text)
            return True

        def usable(e: PoolEntry) -> bool:
            return not self.health.cooling(e.name) and can_answer(e)

        return can_answer, usable

    async def _choose(
        self, prep: Prepared, sticky: str | None
    ) -> tuple[list[str], Decision | None]:
        pool = self.engine.pool
        if prep.model not in AUTO_MODELS:
            entry = pool.get(prep.model)
            if entry is None:
                raise ModelNotFound(
                    f"model {prep.model!r} does not exist; GET /v1/models lists the models",
                    param="model",
                )
            if entry.backend.kind == "replay" and not self.replay.available(
                entry.backend.model or entry.name, prep.prompt_text
            ):
                raise ReplayMiss(
                    f"{entry.name} is served by replay (its recorded answers to {entry.backend.dataset or 'its data set'}'s "
                    "prompts) and has no recorded answer to this prompt",
                    param="messages",
                )
            return [entry.name], None

        can_answer, usable = self.filters(prep.prompt_text)

        q = RouteQuery(
            text=prep.route_text,
            prompt_tokens=prep.prompt_tokens_est,
            candidates=prep.routing.candidates,
            lam=prep.routing.lambda_,
            router=prep.routing.router,
            sticky_model=sticky,
            max_completion_tokens=prep.max_tokens,
            mode=prep.routing.mode,
            max_cost_usd=prep.routing.max_cost_usd,
            target_cost_per_1k_usd=prep.routing.target_cost_per_1k_usd,
        )
        try:
            decision = await self.engine.decide(q, usable=usable)
        except NoHealthyBackend:
            # Everything is cooling down: try the one that recovers first rather than failing.
            decision = await self.engine.decide(q, usable=can_answer)
            # every candidate, soonest to recover first: try them all within the deadline
            soonest = self.health.order_usable([r.model for r in decision.ranked])
            return soonest, decision
        self.metrics.latency.labels(stage="embed").observe(decision.embed_ms / 1000)
        self.metrics.latency.labels(stage="score").observe(decision.score_ms / 1000)
        self.metrics.decisions.labels(model=decision.model, router=decision.router).inc()
        # Every other candidate, not a fixed count: the total deadline bounds the attempts.
        fallbacks = self.engine.fallback_order(decision, decision.model)
        return [decision.model, *fallbacks], decision

    def _payload(self, prep: Prepared, entry: PoolEntry) -> dict[str, Any]:
        payload = {k: v for k, v in prep.body.items() if k not in GATEWAY_FIELDS}
        payload["model"] = entry.backend.model or entry.name
        # One field upstream: llama.cpp ignores max_completion_tokens, vLLM accepts max_tokens.
        payload.pop("max_completion_tokens", None)
        if prep.max_tokens is not None:
            payload["max_tokens"] = prep.max_tokens
        if prep.stream:
            # Always ask for usage: budgets and spend need the real numbers.
            payload["stream_options"] = {
                **(prep.body.get("stream_options") or {}),
                "include_usage": True,
            }
        return payload

    async def _attempt_all(
        self, prep: Prepared, order: list[str], decision: Decision | None
    ) -> Served:
        """Try the candidates in order until one answers or ``fallback_deadline_s`` has passed
        since the request arrived: a transient failure is retried once on the same backend (a
        timeout is not: a hung backend costs one read timeout), anything else moves on.

        A 4xx (400/413/422) from a backend ends a concrete-model request; on a routed request
        the next candidate is tried, and if another backend accepts the same request the
        rejecting ones are counted as failing (a backend answering 400 to everything cools
        down); if every candidate rejects it, the client gets the 400."""
        pool = self.engine.pool
        last: UpstreamFailure | None = None
        rejected: list[tuple[str, UpstreamFailure]] = []
        deadline = prep.t_start + self.settings.fallback_deadline_s
        routed = decision is not None
        for i, name in enumerate(order):
            entry = pool.get(name)
            if entry is None:
                continue
            for attempt in range(2):
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                t_up = time.perf_counter()
                try:
                    try:
                        served = await asyncio.wait_for(
                            self._attempt(prep, entry, decision, t_up), timeout=left
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
                    # A stream counts as a success only once it ends cleanly (``_relay``):
                    # a backend that always cuts streams mid-way must still cool down.
                    self.health.record_success(name)
                for bad, _ in rejected:  # another backend took this very request
                    self.health.record_rejection(bad)
                served.fallbacks = i
                if i:
                    self.metrics.fallbacks.inc()
                return served
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
        self, prep: Prepared, entry: PoolEntry, decision: Decision | None, t_up: float
    ) -> Served:
        if entry.backend.kind == "replay":
            answer = self.replay.lookup(entry.backend.model or entry.name, prep.prompt_text)
            if answer is None:
                raise UpstreamFailure("status", "no recorded answer", status=404)
            chat = prep.kind == "chat"
            body = self.replay.complete(
                entry,
                answer,
                chat=chat,
                prompt_tokens=prep.prompt_tokens_est,
                max_tokens=prep.max_tokens,
            )
            if prep.stream:
                s = self.replay.stream(body, chat=chat)
                return Served(entry, decision, 0, t_up, stream=s)
            return Served(entry, decision, 0, t_up, body=body)
        payload = self._payload(prep, entry)
        if prep.stream:
            stream = await self.upstream.open_stream(
                entry.backend, prep.path, payload, request_id=prep.request_id
            )
            return Served(entry, decision, 0, t_up, stream=stream)
        body = await self.upstream.post_json(
            entry.backend, prep.path, payload, request_id=prep.request_id
        )
        return Served(entry, decision, 0, t_up, body=body)

    # --- responses
    def _headers(
        self, prep: Prepared, s: Served, cost: float, overhead_ms: float
    ) -> dict[str, str]:
        h = {
            "x-request-id": prep.request_id,
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
        if prep.budget_left is not None:
            h["x-junction-budget-remaining"] = str(prep.budget_left)
            h["x-junction-budget-max-tokens"] = str(prep.budget_grant)
        return h

    async def _usage(
        self, prep: Prepared, usage: Any, completion_texts: list[str]
    ) -> dict[str, int]:
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            p = int(usage.get("prompt_tokens") or 0)
            c = int(usage["completion_tokens"])
            return {**usage, "prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
        # The backend reported none (llama.cpp): count with the real tokenizer, off the loop.
        roles = (
            [str(m.get("role")) for m in prep.body.get("messages") or []]
            if prep.kind == "chat"
            else None
        )
        if roles is not None and len(roles) != len(prep.message_texts):
            roles = None
        p = await asyncio.to_thread(count_prompt_tokens, prep.message_texts, roles)
        c = (
            sum(await asyncio.to_thread(count_tokens, ["".join(completion_texts)]))
            if completion_texts
            else 0
        )
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    async def _finish_json(self, prep: Prepared, s: Served, reservation: Reservation) -> Response:
        body = s.body
        assert body is not None
        t_done = time.perf_counter()
        texts = []
        for ch in body.get("choices") or []:
            prep.truncated = prep.truncated or ch.get("finish_reason") == "length"
            if prep.kind == "chat":
                texts.append(str((ch.get("message") or {}).get("content") or ""))
            else:
                texts.append(str(ch.get("text") or ""))
        usage = await self._usage(prep, body.get("usage"), texts)
        if prep.max_tokens is not None and usage["completion_tokens"] > prep.max_tokens:
            usage = await asyncio.to_thread(self._cut_json, prep, body, usage)
        body["usage"] = usage
        body["model"] = s.entry.name
        cost = s.entry.cost_usd(usage["prompt_tokens"], usage["completion_tokens"])
        upstream_s = t_done - s.t_upstream
        overhead_ms = (time.perf_counter() - prep.t_start - upstream_s) * 1000
        self.metrics.latency.labels(stage="upstream").observe(upstream_s)
        await self._record(prep, s, reservation, usage, cost)
        s.conv_state = {
            **s.conv_state,
            "tokens": int(s.conv_state.get("tokens", 0)) + usage["total_tokens"],
        }
        return JSONResponse(body, headers=self._headers(prep, s, cost, overhead_ms))

    def _cut_json(
        self, prep: Prepared, body: dict[str, Any], usage: dict[str, int]
    ) -> dict[str, int]:
        """A backend that ignored ``max_tokens``: each choice cut to ``max_tokens`` tokens (the
        gateway's tokenizer), ``finish_reason: "length"``; the usage becomes what is delivered."""
        assert prep.max_tokens is not None
        delivered = 0
        for ch in body.get("choices") or []:
            msg = ch.get("message") if prep.kind == "chat" else None
            text = str((msg or {}).get("content") or "") if prep.kind == "chat" else ch.get("text")
            kept, n = truncate_to_tokens(str(text or ""), prep.max_tokens)
            delivered += n
            if kept != text:
                if isinstance(msg, dict):
                    msg["content"] = kept
                else:
                    ch["text"] = kept
                ch["finish_reason"] = "length"
                prep.truncated = True
        log.warning(
            "%s sent %d completion tokens for max_tokens %d: cut to %d",
            prep.model,
            usage["completion_tokens"],
            prep.max_tokens,
            delivered,
        )
        p = usage["prompt_tokens"]
        return {**usage, "completion_tokens": delivered, "total_tokens": p + delivered}

    def _finish_stream(self, prep: Prepared, s: Served, reservation: Reservation) -> Response:
        assert s.stream is not None
        expected = (
            s.decision.entry_for(s.entry.name).cost  # type: ignore[union-attr]
            if s.decision is not None and s.decision.entry_for(s.entry.name)
            else s.entry.cost_usd(
                prep.prompt_tokens_est, prep.max_tokens or s.entry.mean_completion_tokens
            )
        )
        overhead_ms = (s.t_upstream - prep.t_start) * 1000
        self.metrics.latency.labels(stage="upstream").observe(time.perf_counter() - s.t_upstream)
        headers = {**self._headers(prep, s, expected, overhead_ms), **SSE_HEADERS}
        return StreamingResponse(
            self._relay(prep, s, reservation), media_type="text/event-stream", headers=headers
        )

    async def _relay(
        self, prep: Prepared, s: Served, reservation: Reservation
    ) -> AsyncIterator[bytes]:
        """Upstream events, one by one, in the spec's shape; our usage chunk; ``[DONE]``."""
        assert s.stream is not None
        served = s.entry.name
        usage: Any = None
        texts: list[str] = []
        meta: dict[str, Any] = {"id": "chatcmpl-" + prep.request_id, "created": int(time.time())}
        obj_name = "chat.completion.chunk" if prep.kind == "chat" else "text_completion"
        failed = False
        cap = _StreamCap(prep.max_tokens)
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
                    yield _sse_error(f"{served} failed mid-stream: {msg}")
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
                        prep.truncated = True
                    if prep.kind == "chat":
                        piece = (ch.get("delta") or {}).get("content")
                    else:
                        piece = ch.get("text")
                    if piece:
                        kept = cap.admit(int(ch.get("index") or 0), str(piece))
                        if kept != piece:  # the backend ignored max_tokens: cut here
                            if prep.kind == "chat":
                                ch["delta"]["content"] = kept
                            else:
                                ch["text"] = kept
                            ch["finish_reason"] = "length"
                            prep.truncated = True
                        piece = kept
                    if piece:
                        texts.append(piece)
                obj["model"] = served
                if prep.include_usage:
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
            yield _sse_error(f"{served} stream failed: {f.message}")
        finally:
            await s.stream.aclose()
            # Recorded even when the client went away mid-stream (tokens were still spent).
            u = usage if isinstance(usage, dict) else None
            if cap.cut or (u is not None and cap.limit is not None and _completion(u) > cap.limit):
                # What reached the client, counted by the gateway's tokenizer: never over the cap.
                u = None
            task = asyncio.create_task(self._record_stream(prep, s, reservation, u, list(texts)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # Spend is on disk before [DONE] reaches the client (shielded: a client that leaves now
        # does not cancel the write).
        await asyncio.shield(task)
        if not failed and prep.include_usage:
            final = await self._usage(prep, usage, texts)
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
        prep: Prepared,
        s: Served,
        reservation: Reservation,
        usage: dict[str, Any] | None,
        texts: list[str],
    ) -> None:
        try:
            final = await self._usage(prep, usage, texts)
            cost = s.entry.cost_usd(final["prompt_tokens"], final["completion_tokens"])
            await self._record(prep, s, reservation, final, cost)
        except Exception:
            log.exception("could not record a streamed request")
            # Without a usage count the whole grant is booked: never under-count a budget.
            await self._settle_budget(prep, used=prep.budget_grant, turn=True)

    async def _record(
        self,
        prep: Prepared,
        s: Served,
        reservation: Reservation,
        usage: dict[str, Any],
        cost: float,
    ) -> None:
        name = s.entry.name
        self.metrics.tokens.labels(model=name, kind="prompt").inc(usage["prompt_tokens"])
        self.metrics.tokens.labels(model=name, kind="completion").inc(usage["completion_tokens"])
        self.metrics.cost.labels(model=name).inc(cost)
        self.metrics.latency.labels(stage="total").observe(time.perf_counter() - prep.t_start)
        await self.accounting.settle(reservation, cost_usd=cost, total_tokens=usage["total_tokens"])
        await self._settle_budget(prep, used=int(usage["completion_tokens"]), turn=True)
        if self.requests_log is not None:
            self.requests_log.add(
                request_record(prep, s, key_id=reservation.key_id, usage=usage, cost=cost)
            )
        if prep.conv_key:
            # Stick to the router's choice, not to a fallback that stood in for it: once the
            # primary recovers the conversation goes back to it.
            sticky = s.decision.model if s.fallbacks and s.decision is not None else name
            state = {
                "model": sticky,
                "tokens": int(s.conv_state.get("tokens", 0)) + int(usage["total_tokens"]),
                "turns": int(s.conv_state.get("turns", 0)) + 1,
            }
            await self.store.set_json(prep.conv_key, state, ttl_s=self.settings.conversation_ttl_s)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _completion(usage: dict[str, Any]) -> int:
    c = usage.get("completion_tokens")
    return c if isinstance(c, int) else 0


class _StreamCap:
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


def _sse_error(message: str) -> bytes:
    body = {
        "error": {
            "message": message,
            "type": "upstream_error",
            "param": None,
            "code": "upstream_error",
        }
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"
