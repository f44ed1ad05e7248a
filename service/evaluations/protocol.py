"""Wire types of ``/v1/evaluations``: rows follow the evaluation-log schema
(``training/data/schema.py``)."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from training.minilm import EMBED_DIM

INT32_MAX = 2**31 - 1  # token counts are INTEGER columns (PostgreSQL: 32-bit)
FLOAT32_MAX = 3.4028234663852886e38  # embeddings are stored as float32


class EvaluationLogRow(BaseModel):
    # allow_inf_nan=False: one NaN in one row's embedding made a model's embedding all-NaN.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    query_id: str = Field(min_length=1, max_length=200)
    query: str | None = Field(default=None, min_length=1, max_length=100_000)
    embedding: list[float] | None = Field(default=None, min_length=EMBED_DIM, max_length=EMBED_DIM)
    model: str = Field(min_length=1, max_length=200)
    score: float = Field(ge=0, le=1)
    prompt_tokens: int = Field(ge=0, le=INT32_MAX)
    completion_tokens: int = Field(ge=0, le=INT32_MAX)
    cost_usd: float | None = Field(default=None, ge=0)
    category: str | None = Field(default=None, max_length=200)
    client_id: str | None = Field(default=None, max_length=200)
    timestamp: str | float | None = None

    @field_validator("embedding")
    @classmethod
    def _float32(cls, v: list[float] | None) -> list[float] | None:
        # Stored as float32: 1e300 is finite here but inf there (found by the fuzz suite).
        if v is not None and any(not -FLOAT32_MAX <= x <= FLOAT32_MAX for x in v):
            raise ValueError("embedding values must fit a 32-bit float (|x| < 3.4e38)")
        return v

    @field_validator("score")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("score must be finite")
        return v

    @model_validator(mode="after")
    def _has_query(self) -> EvaluationLogRow:
        if self.query is None and self.embedding is None:
            raise ValueError("a row needs query (text) or embedding")
        return self


class EvaluationBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # The per-post cap the gateway enforces is the setting ``evaluations_max_rows_per_post``.
    rows: list[EvaluationLogRow] = Field(min_length=1, max_length=10_000)


class BatchAck(BaseModel):
    batch_id: int
    accepted: int
    models_refreshed: dict[str, int] = Field(
        description="model -> evaluations now behind its embedding"
    )
    unregistered_models: list[str]
    shared: bool = Field(
        default=True,
        description="whether these rows refresh the shared embeddings every tenant routes by "
        "(only for keys an operator marked trusted); untrusted rows are stored all the same",
    )


class EvaluationPublic(BaseModel):
    id: int
    batch_id: int | None
    query_id: str | None
    query: str | None
    model: str
    score: float
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    category: str | None


class EvaluationsPublic(BaseModel):
    data: list[EvaluationPublic]
    extra: dict[str, Any] = Field(default_factory=dict, exclude=True)
