"""Wire types of the OpenAI surface. Open schemas: unknown fields are kept and forwarded.

We validate the fields the gateway reads (types and ranges, so bad input is a 400 before any
backend is called) and forward the caller's JSON as sent, minus the gateway-only objects.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from service.errors import InvalidRequest

log = logging.getLogger(__name__)

AUTO_MODELS = ("junction/auto", "auto")
MAX_TOKENS = 2**31 - 1  # token counts are 32-bit everywhere they are stored
ONE_CHOICE = "only 1: a routed request is answered by one model; send n requests for n answers"


def _one_choice(n: int | None) -> int | None:
    # The gateway's usage, budgets and replay all assume one choice; n=3 silently returned one.
    if n is not None and n > 1:
        raise ValueError(f"n={n} is not supported: {ONE_CHOICE}")
    return n


class OpenAIBaseModel(BaseModel):
    """Keeps unknown fields (``extra="allow"``) and logs their names at debug level."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @model_validator(mode="after")
    def _log_extra(self) -> OpenAIBaseModel:
        if self.model_extra and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s: forwarding extra fields %s", type(self).__name__, sorted(self.model_extra)
            )
        return self


class ChatMessage(OpenAIBaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class StreamOptions(OpenAIBaseModel):
    include_usage: bool | None = Field(default=None, strict=True)


RoutingMode = Literal["quality", "balanced", "cost"]
# The three ways to say how much cost matters; a request gives at most one of them.
LAMBDA_SOURCES = ("lambda", "mode", "target_cost_per_1k_usd")


class CostKnob(BaseModel):
    """The cost fields shared by the chat ``routing`` object and ``POST /v1/route``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    lambda_: float | None = Field(
        default=None,
        alias="lambda",
        ge=0,
        allow_inf_nan=False,
        description="raw: utility = p_correct - lambda * cost_usd (accuracy per USD per request)",
    )
    mode: RoutingMode | None = Field(
        default=None,
        description="preset: quality (lambda 0), balanced (95% of quality mode's predicted "
        "accuracy at the lowest cost), cost (80%), calibrated on held-out queries",
    )
    target_cost_per_1k_usd: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="average cost per 1,000 requests to aim for (lambda calibrated on held-out queries)",
    )
    max_cost_usd: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="cap on this request's expected cost: only candidates within it are ranked; "
        "400 no_model_within_max_cost when none fits",
    )

    def check_one_lambda_source(self, prefix: str = "") -> None:
        """At most one of lambda, mode, target_cost_per_1k_usd: a 400 naming the second."""
        given = [
            name
            for name, v in zip(
                LAMBDA_SOURCES, (self.lambda_, self.mode, self.target_cost_per_1k_usd), strict=True
            )
            if v is not None
        ]
        if len(given) > 1:
            raise InvalidRequest(
                f"give at most one of lambda, mode and target_cost_per_1k_usd (got "
                f"{' and '.join(given)}): each one sets how much cost matters",
                param=prefix + given[1],
            )


class RoutingOptions(CostKnob):
    """``routing`` body object (OpenAI clients: ``extra_body``); headers ``x-junction-*``."""

    candidates: list[str] | None = Field(
        default=None, min_length=1, description="route only among these registered models"
    )
    router: str | None = Field(default=None, description="scorer name: locus or an uploaded router")


# header -> routing field; the body's ``routing`` object wins over headers field by field, and a
# body that names any of lambda / mode / target_cost_per_1k_usd ignores the headers for all three.
ROUTING_HEADERS = {
    "x-junction-lambda": "lambda",
    "x-junction-routing-mode": "mode",
    "x-junction-target-cost-per-1k-usd": "target_cost_per_1k_usd",
    "x-junction-max-cost-usd": "max_cost_usd",
    "x-junction-router": "router",
}


def routing_options(body: Mapping[str, Any] | None, headers: Mapping[str, str]) -> dict[str, Any]:
    """The routing fields of a request: ``body`` (already a dict) filled from the headers.

    Raises ``InvalidRequest`` naming the parameter (``routing.mode``, ...) on a bad value.
    """
    data: dict[str, Any] = {k: v for k, v in (body or {}).items() if v is not None}
    body_sets_lambda = any(k in data for k in LAMBDA_SOURCES)
    for header, name in ROUTING_HEADERS.items():
        value = headers.get(header)
        if not value or name in data or (name in LAMBDA_SOURCES and body_sets_lambda):
            continue
        data[name] = value
    if "candidates" not in data and headers.get("x-junction-candidates"):
        data["candidates"] = [
            c.strip() for c in headers["x-junction-candidates"].split(",") if c.strip()
        ]
    return data


def validation_error(exc: ValidationError, prefix: str) -> InvalidRequest:
    """A pydantic error on a routing field as a 400 naming it (``routing.max_cost_usd``)."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "lambda_")
    param = f"{prefix}.{loc}" if prefix and loc else (loc or prefix or None)
    msg = str(err.get("msg", "invalid"))
    return InvalidRequest(f"bad routing option {param}: {msg}", param=param)


def parse_routing(opts: RoutingOptions | None, headers: Mapping[str, str]) -> RoutingOptions:
    """Body ``routing`` wins; the ``x-junction-*`` routing headers fill what it leaves out."""
    body = opts.model_dump(by_alias=True, exclude_none=True) if opts else {}
    try:
        opts = RoutingOptions.model_validate(routing_options(body, headers))
    except ValidationError as exc:
        raise validation_error(exc, "routing") from None
    opts.check_one_lambda_source("routing.")
    return opts


class BudgetOptions(BaseModel):
    """``budget`` body object: a token budget for a whole conversation."""

    model_config = ConfigDict(extra="forbid")

    conversation_id: str | None = Field(default=None, min_length=1, max_length=200)
    total_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS, strict=True)


class ChatCompletionRequest(OpenAIBaseModel):
    # OpenAI fields, in the order of the OpenAI reference
    messages: list[ChatMessage] = Field(min_length=1)
    model: str = Field(min_length=1)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, strict=True)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = Field(default=None, strict=True)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS, strict=True)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS, strict=True)
    n: int | None = Field(default=None, ge=1, strict=True, description=ONE_CHOICE)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, strict=True)
    seed: int | None = Field(default=None, strict=True)
    stop: str | list[str] | None = None
    stream: bool | None = Field(default=False, strict=True)
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True)
    top_p: float | None = Field(default=None, ge=0, le=1, strict=True)
    user: str | None = None

    # --- gateway-only fields (stripped before forwarding)
    routing: RoutingOptions | None = Field(default=None, description="routing knobs")
    budget: BudgetOptions | None = Field(default=None, description="conversation token budget")

    @field_validator("n")
    @classmethod
    def _n(cls, v: int | None) -> int | None:
        return _one_choice(v)


class CompletionRequest(OpenAIBaseModel):
    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS, strict=True)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS, strict=True)
    n: int | None = Field(default=None, ge=1, strict=True, description=ONE_CHOICE)
    stream: bool | None = Field(default=False, strict=True)
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2, strict=True)
    top_p: float | None = Field(default=None, ge=0, le=1, strict=True)

    # --- gateway-only fields
    routing: RoutingOptions | None = None
    budget: BudgetOptions | None = None

    @field_validator("n")
    @classmethod
    def _n(cls, v: int | None) -> int | None:
        return _one_choice(v)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # gateway-only
    backend: str | None = Field(default=None, description="openai | replay | router")
    pricing: dict[str, float] | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def text_of(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
