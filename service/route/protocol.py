"""Wire types of ``POST /v1/route``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.openai.protocol import ChatMessage, CostKnob


class RouteRequest(CostKnob):
    """``{messages | prompt, candidates?}`` plus the cost knob (one of ``lambda``, ``mode``,
    ``target_cost_per_1k_usd``; ``max_cost_usd``), ``router`` and ``max_tokens`` optional."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    prompt: str | None = None
    candidates: list[str] | None = Field(default=None, min_length=1)
    router: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_input(self) -> RouteRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of messages or prompt")
        return self


class CandidateScore(BaseModel):
    model: str
    p_correct: float
    cost: float = Field(description="expected USD cost of this request on the model")
    utility: float = Field(description="p_correct - lambda * cost")


class RouteResponse(BaseModel):
    model: str
    router: str
    lambda_: float = Field(serialization_alias="lambda", description="the lambda used")
    calibration: dict[str, Any] = Field(
        default_factory=dict,
        description="how lambda was chosen (request, default, mode or target) and, when "
        "calibrated, its predicted cost per 1,000 requests and accuracy on the held-out sample",
    )
    candidates: list[CandidateScore]
    timings_ms: dict[str, float]
    extra: dict[str, Any] = Field(default_factory=dict, exclude=True)
