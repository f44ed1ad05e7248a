"""ORM tables. Change them only together with a migration in ``migrations/versions``.

Vectors (query and model embeddings) are float32 little-endian blobs: compact, and the same
bytes on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# The one blob codec, shared with federation's reader of these rows (re-exported here).
from training.data.gateway_rows import from_blob as from_blob
from training.data.gateway_rows import to_blob as to_blob


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class ModelRow(Base):
    """A routable model: its backend, prices and LOCUS embedding."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    backend_kind: Mapped[str] = mapped_column(String(20))  # "openai" | "replay"
    backend_url: Mapped[str | None] = mapped_column(String(500))
    backend_model: Mapped[str | None] = mapped_column(String(200))
    backend_api_key: Mapped[str | None] = mapped_column(String(500))
    input_per_mtok: Mapped[float] = mapped_column(Float)
    output_per_mtok: Mapped[float] = mapped_column(Float)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    num_evaluations: Mapped[int] = mapped_column(Integer)
    mean_prompt_tokens: Mapped[float] = mapped_column(Float, default=0.0)
    mean_completion_tokens: Mapped[float] = mapped_column(Float, default=0.0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class EvaluationRow(Base):
    """One (query, model, score) evaluation; ``key_id`` NULL means registered by an admin."""

    __tablename__ = "evaluations"
    __table_args__ = (Index("ix_evaluations_model_id", "model_name", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )
    batch_id: Mapped[int | None] = mapped_column(
        ForeignKey("evaluation_batches.id", ondelete="CASCADE"), index=True
    )
    query_id: Mapped[str | None] = mapped_column(String(200))
    query: Mapped[str | None] = mapped_column(Text)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    score: Mapped[float] = mapped_column(Float)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    category: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKeyRow(Base):
    """A client API key, stored as its SHA-256 (keys are 256-bit random, so no slow hash)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer)
    budget_usd: Mapped[float | None] = mapped_column(Float)
    spent_usd: Mapped[float] = mapped_column(Float, default=0.0)
    # Only trusted keys' evaluation rows refresh the shared embeddings every tenant routes by.
    trusted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class EvaluationBatchRow(Base):
    """One acknowledged ``POST /v1/evaluations``; the idempotency record of its key."""

    __tablename__ = "evaluation_batches"
    __table_args__ = (
        UniqueConstraint("key_id", "idempotency_key"),
        # key_id is NULL for the admin token, and NULLs never collide in a unique constraint:
        # ``owner`` ("admin" | "key:<id>") is what makes one Idempotency-Key one batch.
        Index("uq_evaluation_batches_owner_key", "owner", "idempotency_key", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    owner: Mapped[str] = mapped_column(String(40), server_default="admin")
    idempotency_key: Mapped[str] = mapped_column(String(200))
    request_sha256: Mapped[str] = mapped_column(String(64))
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RouterRow(Base):
    """An uploaded router artifact (a self-describing checkpoint), at most one active."""

    __tablename__ = "routers"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(50))
    sha256: Mapped[str] = mapped_column(String(64))
    artifact: Mapped[bytes] = mapped_column(LargeBinary)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RegistryStateRow(Base):
    """A single row whose version changes with every registry write (models, keys, routers)."""

    __tablename__ = "registry_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)


class ConversationBudgetRow(Base):
    """One conversation's token budget ledger (``service.budget_ledger``), used without Redis.

    ``expires_at`` is Unix seconds, not a ``DateTime``: the ledger compares it in SQL against a
    bound ``now``, and a float compares the same way on SQLite (which keeps datetimes as text)
    and PostgreSQL. Token counts are 64-bit: a client picks ``total_tokens``.
    """

    __tablename__ = "conversation_budgets"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    total: Mapped[int] = mapped_column(BigInteger)
    spent: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved: Mapped[int] = mapped_column(BigInteger, default=0)
    turns: Mapped[int] = mapped_column(Integer, default=0)
    any_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    last_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class RequestRecordRow(Base):
    """One served chat or completion request: what was chosen, what it cost, what it was compared
    with (``service.request_log``). The operator's dashboard and its savings figures read these.

    ``candidates`` holds the routing decision's ``{model: [p_correct, expected_cost_usd]}`` for
    every candidate (NULL for a request that named its model), so the cost and predicted quality
    of "always the best single model" can be computed for the very same requests.
    ``query_sha256`` links a request to evaluations of the same text (realised quality).
    """

    __tablename__ = "request_records"
    __table_args__ = (Index("ix_request_records_key_time", "key_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )
    key_id: Mapped[int | None] = mapped_column(Integer)  # NULL: the admin token
    kind: Mapped[str] = mapped_column(String(20))  # "chat" | "completion"
    model: Mapped[str] = mapped_column(String(200))  # the model that served it
    chosen: Mapped[str | None] = mapped_column(String(200))  # the router's pick
    router: Mapped[str | None] = mapped_column(String(100))
    lam: Mapped[float | None] = mapped_column(Float)
    p_correct: Mapped[float | None] = mapped_column(Float)  # predicted, for the served model
    candidates: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[float] = mapped_column(Float)
    fallbacks: Mapped[int] = mapped_column(Integer, default=0)
    query_sha256: Mapped[str] = mapped_column(String(64))
    conversation: Mapped[str | None] = mapped_column(String(64), index=True)
    budget_total: Mapped[int | None] = mapped_column(BigInteger)
    budget_granted: Mapped[int | None] = mapped_column(BigInteger)
    budget_left: Mapped[int | None] = mapped_column(BigInteger)
