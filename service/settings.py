"""Gateway settings: one pydantic-settings class read from ``JUNCTION_*`` environment variables.

Usage::

    settings = Settings()                            # JUNCTION_* environment; tests pass fields
    app = create_app(settings)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, computed_field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_ADMIN_TOKEN = "junction-dev-admin-token"  # noqa: S105 - refused outside development


def weak_admin_token(secret: SecretStr) -> bool:
    """The development default in any letter case or padding, whitespace, or too little of it."""
    token = secret.get_secret_value()
    core = token.strip()
    return (
        core.lower() == DEFAULT_ADMIN_TOKEN
        or len(core) < 16
        or len(set(core)) < 4
        or any(ch.isspace() for ch in core)
    )


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "junction"


def normalise_database_url(url: str) -> str:
    """Map the plain ``sqlite://`` / ``postgresql://`` forms to their async drivers."""
    for plain, async_form in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql+psycopg2://", "postgresql+asyncpg://"),
        ("postgresql+psycopg://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            return async_form + url[len(plain) :]
    return url


class Settings(BaseSettings):
    """Everything the gateway reads from its environment (prefix ``JUNCTION_``)."""

    # hide_input_in_errors: a refused admin token must not be printed at start-up.
    model_config = SettingsConfigDict(
        env_prefix="JUNCTION_", extra="ignore", hide_input_in_errors=True
    )

    # --- deployment
    environment: Literal["development", "production"] = Field(
        default="development", description="production refuses default secrets"
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; default: a SQLite file in the data directory",
    )
    redis_url: str | None = Field(
        default=None, description="redis://host:port/db; shared state across replicas"
    )
    redis_prefix: str = Field(default="junction:", description="namespace of every Redis key")
    admin_token: SecretStr = Field(default=SecretStr(DEFAULT_ADMIN_TOKEN))
    data_dir: Path = Field(default_factory=default_data_dir)
    auto_migrate: bool = Field(
        default=True, description="run `alembic upgrade head` at start-up (the only schema path)"
    )
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    metrics_public: bool = Field(
        default=False, description="serve /metrics without the admin token (scrapers inside)"
    )

    # --- default pool
    load_default_bundle: bool = Field(
        default=True, description="register the shipped default pool on first start"
    )
    bundle_path: Path | None = Field(
        default=None, description="artifact bundle folder (default: the shipped one)"
    )
    locus_checkpoint: Path | None = Field(
        default=None, description="LOCUS checkpoint when no bundle is used"
    )
    smollm2_url: str | None = Field(
        default=None,
        description="onboard SmolLM2 (CPU, llama-cpp-python server) at this /v1 URL on start-up",
    )

    # --- routing
    compute_threads: int = Field(
        default=1,
        ge=1,
        description="math threads per worker (torch, BLAS); concurrency comes from workers",
    )
    encoder_backend: Literal["torch", "onnx"] = Field(
        default="onnx",
        description="query encoder: onnx (MiniLM int8, the fast default: its routing decisions "
        "match fp32's, service/results/routing) or torch (fp32, the reference)",
    )
    encoder_max_tokens: int = Field(
        default=256,
        ge=2,
        le=512,
        description="tokens of the routing text the encoder reads (the rest is cut). 128 roughly "
        "halves the encoder's cost on long inputs; on MMLU-Pro it changes few decisions (README), "
        "but it cuts a prompt whose question comes after 128 tokens of context, so 256 stays "
        "the default",
    )
    embed_cache_size: int = Field(default=4096, ge=0, description="LRU of query embeddings")
    embed_batch_max: int = Field(default=64, gt=0)
    embed_batch_wait_ms: float = Field(
        default=0.0,
        ge=0,
        description="extra wait to fill a batch (0: batches form while the encoder is busy)",
    )
    default_lambda: float = Field(
        default=0.0, ge=0, description="utility = p_correct - lambda * cost_usd"
    )
    calibration_queries: str = Field(
        default="mmlu_pro",
        description="held-out queries the cost knob (routing.mode, routing.target_cost_per_1k_usd) "
        "is calibrated on: a data set's validation split, or a JSONL/text file of your traffic",
    )
    calibration_size: int = Field(
        default=2048, ge=16, description="calibration queries drawn (at most; seed 0)"
    )
    stickiness_margin: float = Field(
        default=0.05, ge=0, description="utility gain needed to switch model mid-conversation"
    )
    min_evaluations: int = Field(
        default=16, ge=1, le=32, description="fewest evaluations a model can be registered with"
    )
    max_embed_evaluations: int = Field(
        default=4096, gt=0, description="most recent evaluations used for a LOCUS embedding"
    )
    registry_poll_s: float = Field(default=0.25, gt=0)
    conversation_ttl_s: int = Field(default=24 * 3600, gt=0)

    # --- evaluation ingest (encoding and re-embedding rows is the costliest thing a key can ask)
    evaluations_max_rows_per_post: int = Field(
        default=1000, ge=1, le=10_000, description="rows one POST /v1/evaluations may carry"
    )
    evaluations_rows_per_minute: int = Field(
        default=5000, ge=1, description="rows a client key may post per minute (429 beyond)"
    )

    # --- upstream
    upstream_connect_timeout_s: float = Field(default=3.0, gt=0)
    upstream_read_timeout_s: float = Field(
        default=60.0, gt=0, description="longest silence from a backend (first byte or chunk)"
    )
    upstream_max_connections: int = Field(default=512, gt=0)
    cooldown_s: float = Field(default=15.0, ge=0, description="a failing backend rests this long")
    cooldown_after_failures: int = Field(default=2, ge=1)
    fallback_deadline_s: float = Field(
        default=30.0,
        gt=0,
        description="total time to find a backend: every candidate is tried until this passes",
    )
    health_probe_interval_s: float = Field(default=10.0, ge=0, description="0 disables probes")

    @field_validator("database_url")
    @classmethod
    def _normalise_url(cls, v: str) -> str:
        return normalise_database_url(v) if v else v

    @model_validator(mode="after")
    def _defaults_and_secrets(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'junction.db'}"
        if self.environment == "production" and weak_admin_token(self.admin_token):
            # The message never repeats the token (nor does the error: hide_input_in_errors).
            raise ValueError(
                "JUNCTION_ADMIN_TOKEN must be set to a secret of 16+ characters in production "
                "(not the development default in any case, not mostly whitespace or one repeated "
                "character)"
            )
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
