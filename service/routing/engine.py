"""The routing decision: embed the query, score the candidates, pick argmax p - lambda * cost.

``lambda`` comes from the request (raw), from a preset ``mode`` or a ``target_cost_per_1k_usd``
(both calibrated on a held-out query sample, see ``service.routing.calibration``), or from the
gateway's default. ``max_cost_usd`` caps the expected cost of this one request: only candidates
within it are ranked, and a request that no candidate fits is refused (400
``no_model_within_max_cost``) rather than silently sent to a dearer model.

Within a conversation the previous model is kept unless another one beats its utility by at
least ``margin`` (stickiness with hysteresis), so the model does not bounce turn to turn.

Usage::

    engine = RoutingEngine(embedder=emb, scorers={"locus": LocusScorer(locus)}, margin=0.05)
    engine.swap(pool=await load_pool(db))
    d = await engine.decide(RouteQuery(text="What is 2 + 2?", prompt_tokens=9))
    d.model, d.ranked[0].utility
    plan = await engine.plan(RouteQuery(...), usable=..., can_answer=...)  # + fallback order
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from service.errors import InvalidRequest, ModelNotFound, NoHealthyBackend
from service.routing.calibration import (
    DEFAULT_SAMPLE,
    MODE_QUALITY,
    Curve,
    Sample,
    describe,
    recorded_completion_tokens,
    sample_queries,
)
from service.routing.embedder import BatchingEmbedder
from service.routing.registry import Pool, PoolEntry
from service.routing.scoring import Scorer
from service.tokens import estimate_tokens
from training.selection import neighbours

DEFAULT_COMPLETION_TOKENS = 256.0
CURVE_CACHE = 64  # calibrated candidate sets kept per process
log = logging.getLogger(__name__)


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
    mode: str | None = None  # quality | balanced | cost
    max_cost_usd: float | None = None
    target_cost_per_1k_usd: float | None = None


@dataclass
class Decision:
    model: str
    router: str
    lam: float
    ranked: list[Ranked]
    sticky: bool = False
    embed_ms: float = 0.0
    score_ms: float = 0.0
    # How lambda was chosen: {"source": "request" | "default" | "mode" | "target", ...}; for a
    # calibrated one also the sample's predicted cost per 1,000 requests and accuracy.
    calibration: dict[str, Any] = field(default_factory=dict)

    def entry_for(self, name: str) -> Ranked | None:
        return next((r for r in self.ranked if r.model == name), None)


@dataclass(frozen=True)
class Plan:
    """A routing decision and the candidates to try, in order."""

    decision: Decision
    order: tuple[str, ...]
    cooling: bool = False  # no candidate was usable: decided among those that can answer


class RoutingEngine:
    def __init__(
        self,
        *,
        embedder: BatchingEmbedder,
        scorers: dict[str, Scorer],
        default_router: str = "locus",
        default_lambda: float = 0.0,
        margin: float = 0.05,
        calibration_queries: str | Path = "mmlu_pro",
        calibration_size: int = DEFAULT_SAMPLE,
    ) -> None:
        self.embedder = embedder
        self.scorers = dict(scorers)
        self.default_router = default_router
        self.default_lambda = default_lambda
        self.margin = margin
        self.pool = Pool.build(0, [])
        self.calibration_queries = calibration_queries
        self.calibration_size = calibration_size
        # (X [N, D], prompt tokens [N], the sample itself)
        self._sample: tuple[np.ndarray, np.ndarray, Sample] | None = None
        self._sample_lock = asyncio.Lock()
        self._curves: OrderedDict[tuple[Any, ...], Curve] = OrderedDict()

    def swap(self, *, pool: Pool, scorers: dict[str, Scorer] | None = None) -> None:
        """Serve a new registry pool (and, when given, a new set of scorers) from now on;
        decisions in flight keep the pool they started with."""
        if scorers is not None:
            self.scorers = dict(scorers)
        self.pool = pool

    async def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Query embeddings [N, D] through the gateway's (batched, cached) encoder."""
        return await self.embedder.embed(list(texts))

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
        p = self.predict(scorer, pool, names, X)[0]
        lam, calibration = await self.resolve_lambda(q, scorer, pool, names)
        ranked = []
        for name, pc in zip(names, p, strict=True):
            cost = self.expected_cost(pool.get(name), q.prompt_tokens, q.max_completion_tokens)  # type: ignore[arg-type]
            if q.max_cost_usd is not None and cost > q.max_cost_usd:
                continue
            ranked.append(Ranked(name, float(pc), cost, float(pc) - lam * cost))
        if not ranked:
            cheapest = min(
                self.expected_cost(pool.get(n), q.prompt_tokens, q.max_completion_tokens)  # type: ignore[arg-type]
                for n in names
            )
            raise InvalidRequest(
                f"no candidate model fits max_cost_usd {q.max_cost_usd:g}: the cheapest expected "
                f"cost of this request is {cheapest:.3g} USD (raise the cap, or lower max_tokens)",
                param="routing.max_cost_usd",
                code="no_model_within_max_cost",
            )
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
            calibration=calibration,
        )

    async def plan(
        self,
        q: RouteQuery,
        *,
        usable: Callable[[PoolEntry], bool],
        can_answer: Callable[[PoolEntry], bool],
    ) -> Plan:
        """The decision among the usable candidates and the order to try them in: the chosen
        model, then every other candidate nearest to it in model-embedding space. When none is
        usable (all cooling down), the decision among those that can answer, in ranked order
        (``Plan.cooling``): the caller tries the one that recovers first rather than failing."""
        try:
            d = await self.decide(q, usable=usable)
        except NoHealthyBackend:
            d = await self.decide(q, usable=can_answer)
            return Plan(d, tuple(r.model for r in d.ranked), cooling=True)
        # Every other candidate, not a fixed count: the caller's deadline bounds the attempts.
        return Plan(d, (d.model, *self.fallback_order(d, d.model)), cooling=False)

    def predict(self, scorer: Scorer, pool: Pool, names: list[str], X: np.ndarray) -> np.ndarray:
        """p_correct [B, len(names)]: the one place the engine asks a scorer (decisions and
        calibration alike)."""
        return np.asarray(scorer.p_correct(pool, names, X), dtype=np.float32)

    # --- the cost knob
    async def resolve_lambda(
        self, q: RouteQuery, scorer: Scorer, pool: Pool, names: list[str]
    ) -> tuple[float, dict[str, Any]]:
        """The request's lambda and how it was chosen (raw, default, preset or cost target)."""
        if q.lam is not None:
            return q.lam, {"source": "request", "lambda": q.lam}
        if q.mode is None and q.target_cost_per_1k_usd is None:
            return self.default_lambda, {"source": "default", "lambda": self.default_lambda}
        if q.mode == "quality":
            return 0.0, {"source": "mode", "mode": "quality", "lambda": 0.0}
        curve = await self.curve(scorer, pool, names, q.max_completion_tokens, q.max_cost_usd)
        if q.target_cost_per_1k_usd is not None:
            try:
                lam = curve.lambda_for_cost(q.target_cost_per_1k_usd / 1000.0)
            except ValueError as exc:
                raise InvalidRequest(
                    f"target_cost_per_1k_usd {q.target_cost_per_1k_usd:g} is unreachable: {exc}",
                    param="routing.target_cost_per_1k_usd",
                    code="target_cost_unreachable",
                ) from None
            info = {"source": "target", "target_cost_per_1k_usd": q.target_cost_per_1k_usd}
        else:
            if q.mode not in MODE_QUALITY:
                raise InvalidRequest(
                    f"unknown routing mode {q.mode!r}; one of {', '.join(MODE_QUALITY)}",
                    param="routing.mode",
                )
            lam = curve.lambda_for_quality(MODE_QUALITY[q.mode])
            info = {"source": "mode", "mode": q.mode}
        return lam, {**info, **describe(curve, lam)}

    async def calibration_sample(self) -> tuple[np.ndarray, np.ndarray, Sample]:
        """(query embeddings [N, D], estimated prompt tokens [N]) of the calibration queries, once
        per process: a data set's stored validation embeddings when they match the encoder's
        width, else the queries embedded by the gateway's own encoder."""
        if self._sample is None:
            async with self._sample_lock:
                if self._sample is None:
                    t0 = time.perf_counter()
                    sample = await asyncio.to_thread(
                        sample_queries, self.calibration_queries, size=self.calibration_size
                    )
                    X = sample.embeddings
                    width = (await self.embedder.embed_uncached(["width"])).shape[1]
                    if X is None or X.shape[1] != width:
                        X = await self.embedder.embed_uncached(sample.texts)
                    tokens = np.array([estimate_tokens(t) for t in sample.texts], dtype=np.float64)
                    log.info(
                        "cost knob: %d calibration queries from %s ready in %.1f s",
                        len(sample.texts),
                        self.calibration_queries,
                        time.perf_counter() - t0,
                    )
                    self._sample = (X, tokens, sample)
        return self._sample

    async def curve(
        self,
        scorer: Scorer,
        pool: Pool,
        names: list[str],
        max_tokens: int | None = None,
        max_cost_usd: float | None = None,
    ) -> Curve:
        """The calibration sample scored against these candidates (cached per registry version)."""
        key = (pool.version, id(pool), scorer.name, tuple(names), max_tokens, max_cost_usd)
        hit = self._curves.get(key)
        if hit is not None:
            self._curves.move_to_end(key)
            return hit
        X, tokens, sample = await self.calibration_sample()
        p = await asyncio.to_thread(self.predict, scorer, pool, names, X)
        entries: list[PoolEntry] = [pool.get(n) for n in names]  # type: ignore[misc]
        cost = np.array(
            [[self.expected_cost(e, int(t), max_tokens) for e in entries] for t in tokens],
            dtype=np.float64,
        )
        # What a choice is billed: a calibration query's recorded answer has real completion
        # tokens, which run longer than a model's mean on the queries routing sends it (on
        # MMLU-Pro, expected-cost calibration left the billed cost 8-19% over the target).
        replayed = [  # only a replay of the sample's own data set has its recorded answers
            (e.backend.model or e.name)
            if e.backend.kind == "replay" and e.backend.dataset == sample.dataset
            else ""
            for e in entries
        ]
        recorded = await asyncio.to_thread(recorded_completion_tokens, sample, replayed)
        if max_tokens is not None:
            recorded = np.minimum(recorded, float(max_tokens))
        inp = np.array([e.input_per_mtok for e in entries])[None, :]
        out = np.array([e.output_per_mtok for e in entries])[None, :]
        spend = (tokens[:, None] * inp + recorded * out) / 1e6
        if max_cost_usd is not None:
            cost = np.where(cost > max_cost_usd, np.inf, cost)
        curve = Curve.build(p, cost, spend)
        self._curves[key] = curve
        while len(self._curves) > CURVE_CACHE:
            self._curves.popitem(last=False)
        return curve

    def fallback_order(self, decision: Decision, failed: str) -> list[str]:
        """Other candidates, nearest to the failed model in LOCUS space first (ties in ranked
        order): ``training.selection.neighbours``, the rule the evaluation measures."""
        pool = self.pool
        others = [r.model for r in decision.ranked if r.model != failed and pool.get(r.model)]
        if not others or pool.get(failed) is None:
            return others
        Z = pool.embeddings([failed, *others])
        return [others[j - 1] for j in neighbours(Z, 0)]
