"""Serving chat and text completions: five named steps, each owning one decision.

::

    parse     service.openai.parse     raw body + headers -> ParsedRequest (frozen; 400 here)
    grant     service.openai.grant     the conversation's token budget (TAB): this turn's
                                       max_tokens, reserved; settled once, on exit at the latest
    decide    service.openai.decide    Route: the candidates to try, in order (one engine call)
    grant     service.openai.grant     the key's token rate and worst-case spend, reserved
    dispatch  service.openai.dispatch  Served: retry / fall back over the route's upstreams
    respond   service.openai.respond   JSON or SSE; usage, cost, budget and conversation recorded

The token budget is granted before the decision because the grant is the ``max_tokens`` that
the candidates' expected costs are computed with; the spend after it, because the worst case is
over the candidates that may serve. Each step returns an explicit result and no step rewrites
another's input; every decision is made before the first byte, after which a failure becomes an
SSE error event followed by ``[DONE]``. The budget and spend holds are async context managers:
whatever a failed request reserved is given back when they exit (for a stream, once the stream
is recorded).

Usage::

    serving = OpenAIServing(engine=..., upstream=..., health=..., replay=..., accounting=...,
                            store=..., metrics=..., settings=..., budgets=...)
    response = await serving.create(raw_body, headers, principal, kind="chat")
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from starlette.responses import Response

from service.accounting import Accounting
from service.auth import Principal
from service.metrics import Metrics
from service.openai.decide import Decider
from service.openai.dispatch import Dispatcher
from service.openai.grant import Granter
from service.openai.parse import Kind, parse_request
from service.openai.protocol import AUTO_MODELS, ModelCard, ModelList
from service.openai.respond import Responder
from service.request_log import RequestLog
from service.routing.engine import RoutingEngine
from service.settings import Settings
from service.state import BudgetLedgerStore, StateStore
from service.upstream.client import UpstreamClient
from service.upstream.health import BackendHealth
from service.upstream.replay import ReplayBackend

if TYPE_CHECKING:
    from budget_controller import BudgetController

# Reserved against a spend budget when the request sets no max_tokens.
WORST_CASE_COMPLETION_TOKENS = 4096


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
        self.store = store
        self.decider = Decider(engine=engine, health=health, replay=replay, metrics=metrics)
        # Conversation budget ledgers: the state store unless the app keeps them elsewhere.
        self.granter = Granter(
            budgets=budgets if budgets is not None else store,
            accounting=accounting,
            embed=engine.embed,
            ttl_s=settings.conversation_ttl_s,
            budget_controller=budget_controller,
        )
        self.dispatcher = Dispatcher(
            upstream=upstream,
            health=health,
            replay=replay,
            metrics=metrics,
            deadline_s=settings.fallback_deadline_s,
        )
        self.responder = Responder(
            health=health,
            metrics=metrics,
            store=store,
            conversation_ttl_s=settings.conversation_ttl_s,
            requests_log=requests_log,
        )

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

    # --- the request
    async def create(
        self, raw: bytes, headers: Mapping[str, str], principal: Principal, *, kind: Kind
    ) -> Response:
        req = parse_request(raw, headers, principal, kind)
        state = ((await self.store.get_json(req.conv_key)) if req.conv_key else None) or {}
        async with AsyncExitStack() as holds:
            turn = await holds.enter_async_context(self.granter.turn(req))
            route = await self.decider.decide(
                req, sticky=state.get("model"), max_tokens=turn.max_tokens
            )
            completion = turn.max_tokens or WORST_CASE_COMPLETION_TOKENS
            # The prompt estimate (4 chars a token) misses chat-template tokens: reserve generously.
            prompt_worst = 2 * req.prompt_tokens_est + 8 * len(req.message_texts)
            worst = max((e.cost_usd(prompt_worst, completion) for e in route.entries), default=0.0)
            # Tokens per minute are reserved as OpenAI counts them: the prompt estimate plus the
            # completion the client allows; settled with the real usage.
            spend = await holds.enter_async_context(
                self.granter.spend(
                    principal,
                    worst_cost_usd=worst,
                    tokens=req.prompt_tokens_est + (turn.max_tokens or 0),
                )
            )
            served = await self.dispatcher.dispatch(req, route, max_tokens=turn.max_tokens)
            if served.body is not None:
                return await self.responder.json(
                    req, served, turn=turn, spend=spend, conv_state=state
                )
            # The stream holds the budget and spend until it is recorded.
            return self.responder.stream(
                req, served, turn=turn, spend=spend, conv_state=state, holds=holds.pop_all()
            )

    async def drain(self) -> None:
        await self.responder.drain()
