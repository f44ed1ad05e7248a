"""The routing decision: embed the query, score the candidates, pick argmax p - lambda * cost.

Within a conversation the previous model is kept unless another one beats its utility by at
least ``margin`` (stickiness with hysteresis), so the model does not bounce turn to turn.

Usage::

    engine = RoutingEngine(embedder=emb, scorers={"locus": LocusScorer(locus)}, margin=0.05)
    engine.pool = await load_pool(db)
    d = await engine.decide(RouteQuery(text="What is 2 + 2?", prompt_tokens=9))
    d.model, d.ranked[0].utility
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service.errors import InvalidRequest, ModelNotFound, NoHealthyBackend
from service.routing.embedder import BatchingEmbedder
from service.routing.registry import Pool, PoolEntry
from service.routing.scoring import Scorer

DEFAULT_COMPLETION_TOKENS = 256.0


@dataclass(frozen=True)
class Ranked:
    model: str
    p_correct: float
    cost: float
    utility: float


@dataclass(frozen=True)
class RouteQuery:
    text: str
    prompt_tokens: int
    candidates: list[str] | None = None
    lam: float | None = None
    router: str | None = None
    sticky_model: str | None = None
    max_completion_tokens: int | None = None


@dataclass
class Decision:
    model: str
    router: str
    lam: float
    ranked: list[Ranked]
    sticky: bool = False
    embed_ms: float = 0.0
    score_ms: float = 0.0
    embedding: np.ndarray | None = field(default=None, repr=False)

    def entry_for(self, name: str) -> Ranked | None:
        return next((r for r in self.ranked if r.model == name), None)


class RoutingEngine:
    def __init__(
        self,
        *,
        embedder: BatchingEmbedder,
        scorers: dict[str, Scorer],
        default_router: str = "locus",
        default_lambda: float = 0.0,
        margin: float = 0.05,
    ) -> None:
        self.embedder = embedder
        self.scorers = dict(scorers)
        self.default_router = default_router
        self.default_lambda = default_lambda
        self.margin = margin
        self.pool = Pool.build(0, [])

    def expected_cost(self, e: PoolEntry, prompt_tokens: int, max_tokens: int | None) -> float:
        completion = e.mean_completion_tokens or DEFAULT_COMPLETION_TOKENS
        if max_tokens is not None:
            completion = min(completion, float(max_tokens))
        return e.cost_usd(prompt_tokens, completion)

    def _candidates(
        self, q: RouteQuery, pool: Pool, usable: Callable[[PoolEntry], bool] | None
    ) -> list[str]:
        if q.candidates:
            unknown = [c for c in q.candidates if pool.get(c) is None]
            if unknown:
                raise ModelNotFound(
                    f"unknown candidate model(s): {', '.join(unknown)}", param="routing.candidates"
                )
            names = list(dict.fromkeys(q.candidates))
        else:
            names = pool.names
        if usable is not None:
            names = [n for n in names if usable(pool.get(n))]  # type: ignore[arg-type]
        return names

    def scorer_for(self, router: str | None) -> Scorer:
        name = router or self.default_router
        scorer = self.scorers.get(name)
        if scorer is None:
            raise InvalidRequest(
                f"unknown router {name!r}; available: {', '.join(sorted(self.scorers))}",
                param="routing.router",
                code="router_not_found",
            )
        return scorer

    async def decide(
        self, q: RouteQuery, *, usable: Callable[[PoolEntry], bool] | None = None
    ) -> Decision:
        pool = self.pool
        scorer = self.scorer_for(q.router)
        names = [n for n in self._candidates(q, pool, usable) if scorer.supports(n)]
        if not names:
            raise NoHealthyBackend(
                "no candidate model can serve this request", headers={"Retry-After": "5"}
            )
        t0 = time.perf_counter()
        X = await self.embedder.embed([q.text])
        t1 = time.perf_counter()
        p = scorer.p_correct(pool, names, X)[0]
        lam = self.default_lambda if q.lam is None else q.lam
        ranked = []
        for name, pc in zip(names, p, strict=True):
            cost = self.expected_cost(pool.get(name), q.prompt_tokens, q.max_completion_tokens)  # type: ignore[arg-type]
            ranked.append(Ranked(name, float(pc), cost, float(pc) - lam * cost))
        ranked.sort(key=lambda r: (-r.utility, r.cost, r.model))
        chosen, sticky = ranked[0].model, False
        if q.sticky_model is not None and q.sticky_model != chosen:
            prev = next((r for r in ranked if r.model == q.sticky_model), None)
            if prev is not None and ranked[0].utility - prev.utility < self.margin:
                chosen, sticky = prev.model, True
        t2 = time.perf_counter()
        return Decision(
            model=chosen,
            router=scorer.name,
            lam=lam,
            ranked=ranked,
            sticky=sticky,
            embed_ms=(t1 - t0) * 1000,
            score_ms=(t2 - t1) * 1000,
            embedding=X[0],
        )

    def fallback_order(self, decision: Decision, failed: str) -> list[str]:
        """Other candidates, nearest to the failed model in LOCUS space first."""
        pool = self.pool
        others = [r.model for r in decision.ranked if r.model != failed and pool.get(r.model)]
        if not others or pool.get(failed) is None:
            return others
        z = pool.get(failed).embedding  # type: ignore[union-attr]
        Z = pool.embeddings(others)
        dist = np.linalg.norm(Z - z[None, :], axis=1)
        return [others[i] for i in np.argsort(dist, kind="stable")]
