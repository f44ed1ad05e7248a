"""Admin wire types (``XCreate`` / ``XUpdate`` / ``XPublic``)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from training.minilm import EMBED_DIM

FLOAT32_MAX = 3.4028234663852886e38  # embeddings are stored as float32
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$"


class Strict(BaseModel):
    # No NaN/inf anywhere (a price of 1e999 parses as inf; a NaN embedding poisons a model).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class BackendSpec(Strict):
    """An OpenAI-compatible server (``url`` + ``model``), or ``kind: replay`` for a data-set model."""

    kind: Literal["openai", "replay"] = "openai"
    url: str | None = Field(
        default=None, description="base URL incl. /v1, e.g. http://vllm:8000/v1"
    )
    model: str | None = Field(default=None, description="the model name the backend serves")
    api_key: str | None = Field(default=None, description="sent as Bearer to the backend")
    dataset: str | None = Field(default=None, description="replay: the data set (mmlu_pro)")

    @model_validator(mode="after")
    def _complete(self) -> BackendSpec:
        if self.kind == "openai":
            if not self.url or not self.url.startswith(("http://", "https://")):
                raise ValueError("backend.url must be an http(s) URL for an openai backend")
            if not self.model:
                raise ValueError("backend.model is required for an openai backend")
        return self


class Pricing(Strict):
    input_per_mtok: float = Field(ge=0, description="USD per million prompt tokens")
    output_per_mtok: float = Field(ge=0, description="USD per million completion tokens")


class EvaluationIn(Strict):
    """One evaluation: the query text (or its all-MiniLM-L6-v2 embedding) and a score in [0, 1]."""

    query: str | None = Field(default=None, min_length=1, max_length=100_000)
    embedding: list[float] | None = Field(default=None, min_length=EMBED_DIM, max_length=EMBED_DIM)
    score: float = Field(ge=0, le=1)
    query_id: str | None = Field(default=None, max_length=200)
    prompt_tokens: int | None = Field(default=None, ge=0, le=2**31 - 1)
    completion_tokens: int | None = Field(default=None, ge=0, le=2**31 - 1)
    category: str | None = Field(default=None, max_length=200)

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
            raise ValueError("score must be a finite number in [0, 1]")
        return v

    @model_validator(mode="after")
    def _has_query(self) -> EvaluationIn:
        if self.query is None and self.embedding is None:
            raise ValueError("each evaluation needs a query (text) or an embedding")
        return self


class ModelCreate(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    backend: BackendSpec
    pricing: Pricing
    evaluations: list[EvaluationIn] = Field(
        description="at least JUNCTION_MIN_EVALUATIONS (default 16, never more than 32)"
    )


class ModelUpdate(Strict):
    backend: BackendSpec | None = None
    pricing: Pricing | None = None
    enabled: bool | None = None


class ModelPublic(BaseModel):
    name: str
    backend: dict[str, Any]
    pricing: Pricing
    embedding: list[float]
    num_evaluations: int
    enabled: bool
    created_at: datetime
    registry_version: int | None = None
    routable: bool | None = None


class ModelsPublic(BaseModel):
    data: list[ModelPublic]
    count: int


class Neighbor(BaseModel):
    model: str
    distance: float
    cosine: float


class NeighborsPublic(BaseModel):
    model: str
    neighbors: list[Neighbor]


class PortfolioRequest(Strict):
    k: int = Field(ge=1, le=256)
    candidates: list[str] | None = None
    max_cost_per_mtok: float | None = Field(default=None, ge=0)


class PortfolioPublic(BaseModel):
    models: list[str]
    coverage: float = Field(description="mean over probe queries of the best predicted p_correct")
    radius: float = Field(description="k-center radius in LOCUS space")


class KeyCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    requests_per_minute: int | None = Field(default=None, ge=1, le=2**31 - 1)
    tokens_per_minute: int | None = Field(default=None, ge=1, le=2**31 - 1)
    budget_usd: float | None = Field(default=None, ge=0)
    trusted: bool = Field(
        default=False,
        description="this key's evaluation rows refresh the shared embeddings every tenant "
        "routes by (untrusted rows are stored and used by federation only)",
    )


class KeyUpdate(Strict):
    """``PATCH /admin/keys/{id}``: trust (or distrust) a client's evaluation rows."""

    trusted: bool


class KeyPublic(BaseModel):
    id: int
    name: str
    prefix: str
    requests_per_minute: int | None
    tokens_per_minute: int | None
    budget_usd: float | None
    spent_usd: float
    created_at: datetime
    revoked: bool
    trusted: bool = False


class KeyCreated(KeyPublic):
    key: str = Field(description="shown once; only its hash is stored")


class KeysPublic(BaseModel):
    data: list[KeyPublic]


class RouterPublic(BaseModel):
    name: str
    version: int
    kind: str
    sha256: str
    active: bool
    created_at: datetime


class RoutersPublic(BaseModel):
    data: list[RouterPublic]
    builtin: list[str] = ["locus"]


class RouterActivate(Strict):
    name: str
    version: int | None = None
