"""``POST /v1/route``: which model would answer, with every candidate's p_correct and cost."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from service.deps import AdmittedClientDep, EngineDep, MetricsDep, OpenAIServingDep
from service.jsonbody import parse_json_object
from service.openai.parse import conversation_text
from service.openai.protocol import routing_options, text_of
from service.route.protocol import CandidateScore, RouteRequest, RouteResponse
from service.routing.engine import RouteQuery
from service.tokens import estimate_tokens

router = APIRouter(tags=["route"])


@router.post(
    "/v1/route",
    openapi_extra={
        "requestBody": {
            "content": {"application/json": {"schema": RouteRequest.model_json_schema()}}
        }
    },
)
async def route(
    request: Request,
    engine: EngineDep,
    serving: OpenAIServingDep,
    metrics: MetricsDep,
    principal: AdmittedClientDep,  # noqa: ARG001
) -> RouteResponse:
    t0 = time.perf_counter()
    body = parse_json_object(await request.body())
    # The x-junction-* routing headers fill what the body leaves out, as on chat requests; a
    # bad value is a 400 naming the field (the validation handler).
    req = RouteRequest.model_validate(routing_options(body, request.headers))
    req.check_one_lambda_source()
    if req.messages is not None:
        conv = conversation_text(req.messages)  # the same rule as chat completions
        text, prompt = conv.route, conv.prompt
        tokens = sum(estimate_tokens(text_of(m.content)) for m in req.messages)
    else:
        text = prompt = req.prompt or ""
        tokens = estimate_tokens(text)
    _, usable = serving.decider.filters(prompt)
    d = await engine.decide(
        RouteQuery(
            text=text,
            prompt_tokens=tokens,
            candidates=req.candidates,
            lam=req.lambda_,
            router=req.router,
            max_completion_tokens=req.max_tokens,
            mode=req.mode,
            max_cost_usd=req.max_cost_usd,
            target_cost_per_1k_usd=req.target_cost_per_1k_usd,
        ),
        usable=usable,
    )
    metrics.latency.labels(stage="embed").observe(d.embed_ms / 1000)
    metrics.latency.labels(stage="score").observe(d.score_ms / 1000)
    return RouteResponse(
        model=d.model,
        router=d.router,
        lambda_=d.lam,
        calibration=d.calibration,
        candidates=[
            CandidateScore(model=r.model, p_correct=r.p_correct, cost=r.cost, utility=r.utility)
            for r in d.ranked
        ],
        timings_ms={
            "embed": d.embed_ms,
            "score": d.score_ms,
            "total": (time.perf_counter() - t0) * 1000,
        },
    )
