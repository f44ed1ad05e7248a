"""Step 2 of a request, decide: which models to try, in which order (one engine call).

A concrete model name is served by that model alone (404 if unknown; 400 ``replay_miss`` when a
replay backend has no recorded answer to the prompt). ``junction/auto`` asks the routing engine
once (``RoutingEngine.plan``): the chosen model, then every other candidate nearest to it in
LOCUS space. Candidates that are cooling down are left out; when all of them are, they are
tried anyway, the soonest to recover first, rather than failing the request.

Usage::

    decider = Decider(engine=..., health=..., replay=..., metrics=...)
    route = await decider.decide(req, sticky=None, max_tokens=256)
    route.entries[0].name, route.decision
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.errors import ModelNotFound, ReplayMiss
from service.metrics import Metrics
from service.openai.parse import ParsedRequest
from service.openai.protocol import AUTO_MODELS
from service.routing.engine import Decision, RouteQuery, RoutingEngine
from service.routing.registry import PoolEntry
from service.upstream.health import BackendHealth
from service.upstream.replay import ReplayBackend

Filter = Callable[[PoolEntry], bool]


@dataclass(frozen=True)
class Route:
    """The candidates to try, in order, and the decision behind them (None: a concrete model)."""

    entries: tuple[PoolEntry, ...]
    decision: Decision | None


class Decider:
    def __init__(
        self,
        *,
        engine: RoutingEngine,
        health: BackendHealth,
        replay: ReplayBackend,
        metrics: Metrics,
    ) -> None:
        self.engine = engine
        self.health = health
        self.replay = replay
        self.metrics = metrics

    def filters(self, prompt_text: str) -> tuple[Filter, Filter]:
        """(can answer this prompt, can answer it and is not cooling down)."""

        def can_answer(e: PoolEntry) -> bool:
            if e.backend.kind == "replay":
                return self.replay.available(e.backend.model or e.name, prompt_text)
            return True

        def usable(e: PoolEntry) -> bool:
            return not self.health.cooling(e.name) and can_answer(e)

        return can_answer, usable

    async def decide(
        self, req: ParsedRequest, *, sticky: str | None, max_tokens: int | None
    ) -> Route:
        """``max_tokens``: the turn's cap (a budget grant or the client's), for expected costs."""
        pool = self.engine.pool
        if req.model not in AUTO_MODELS:
            entry = pool.get(req.model)
            if entry is None:
                raise ModelNotFound(
                    f"model {req.model!r} does not exist; GET /v1/models lists the models",
                    param="model",
                )
            if entry.backend.kind == "replay" and not self.replay.available(
                entry.backend.model or entry.name, req.prompt_text
            ):
                raise ReplayMiss(
                    f"{entry.name} is served by replay (its recorded answers to {entry.backend.dataset or 'its data set'}'s "
                    "prompts) and has no recorded answer to this prompt",
                    param="messages",
                )
            return Route((entry,), None)

        can_answer, usable = self.filters(req.prompt_text)
        r = req.routing
        plan = await self.engine.plan(
            RouteQuery(
                text=req.route_text,
                prompt_tokens=req.prompt_tokens_est,
                candidates=r.candidates,
                lam=r.lambda_,
                router=r.router,
                sticky_model=sticky,
                max_completion_tokens=max_tokens,
                mode=r.mode,
                max_cost_usd=r.max_cost_usd,
                target_cost_per_1k_usd=r.target_cost_per_1k_usd,
            ),
            usable=usable,
            can_answer=can_answer,
        )
        d = plan.decision
        if plan.cooling:
            # every candidate, soonest to recover first: try them all within the deadline
            order = self.health.order_usable(list(plan.order))
        else:
            order = list(plan.order)
            self.metrics.latency.labels(stage="embed").observe(d.embed_ms / 1000)
            self.metrics.latency.labels(stage="score").observe(d.score_ms / 1000)
            self.metrics.decisions.labels(model=d.model, router=d.router).inc()
        pool = self.engine.pool
        entries = tuple(e for e in (pool.get(n) for n in order) if e is not None)
        return Route(entries, d)
