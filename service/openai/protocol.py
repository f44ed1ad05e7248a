"""Wire types of the OpenAI surface. Open schemas: unknown fields are kept and forwarded.

We validate the fields the gateway reads (types and ranges, so bad input is a 400 before any
backend is called) and forward the caller's JSON as sent, minus the gateway-only objects.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)

AUTO_MODELS = ("junction/auto", "auto")


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
    include_usage: bool | None = None


class RoutingOptions(BaseModel):
    """``routing`` body object (OpenAI clients: ``extra_body``); headers ``x-junction-*``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    lambda_: float | None = Field(
        default=None, alias="lambda", ge=0, description="utility = p_correct - lambda * cost_usd"
    )
    candidates: list[str] | None = Field(
        default=None, min_length=1, description="route only among these registered models"
    )
    router: str | None = Field(default=None, description="scorer name: locus or an uploaded router")


class BudgetOptions(BaseModel):
    """``budget`` body object: a token budget for a whole conversation."""

    model_config = ConfigDict(extra="forbid")

    conversation_id: str | None = Field(default=None, max_length=200)
    total_tokens: int | None = Field(default=None, ge=1)


class ChatCompletionRequest(OpenAIBaseModel):
    # OpenAI fields, in the order of the OpenAI reference
    messages: list[ChatMessage] = Field(min_length=1)
    model: str = Field(min_length=1)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    max_completion_tokens: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=128)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    user: str | None = None

    # --- gateway-only fields (stripped before forwarding)
    routing: RoutingOptions | None = Field(default=None, description="routing knobs")
    budget: BudgetOptions | None = Field(default=None, description="conversation token budget")


class CompletionRequest(OpenAIBaseModel):
    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)

    # --- gateway-only fields
    routing: RoutingOptions | None = None
    budget: BudgetOptions | None = None


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
