from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import DEFAULT_ADMIN_TOKEN, Settings, normalise_database_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_database_urls_are_normalised_to_async_drivers(given: str, expected: str) -> None:
    assert normalise_database_url(given) == expected
    assert Settings(database_url=given).database_url == expected


def test_default_database_is_a_sqlite_file_in_the_data_dir(tmp_path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.database_url == f"sqlite+aiosqlite:///{tmp_path / 'junction.db'}"
    assert s.is_sqlite


def test_settings_come_from_junction_env(monkeypatch) -> None:
    monkeypatch.setenv("JUNCTION_DATABASE_URL", "postgresql://a@b/c")
    monkeypatch.setenv("JUNCTION_REDIS_URL", "redis://r:6379/1")
    monkeypatch.setenv("JUNCTION_DEFAULT_LAMBDA", "12.5")
    s = Settings()
    assert s.database_url == "postgresql+asyncpg://a@b/c"
    assert s.redis_url == "redis://r:6379/1"
    assert s.default_lambda == 12.5


def test_production_refuses_the_default_admin_token() -> None:
    with pytest.raises(ValidationError, match="JUNCTION_ADMIN_TOKEN"):
        Settings(environment="production")
    with pytest.raises(ValidationError, match="JUNCTION_ADMIN_TOKEN"):
        Settings(environment="production", admin_token="short")
    s = Settings(environment="production", admin_token="a-long-enough-secret-token")
    assert s.admin_token.get_secret_value() != DEFAULT_ADMIN_TOKEN


def test_min_evaluations_is_capped_at_32() -> None:
    with pytest.raises(ValidationError):
        Settings(min_evaluations=33)


def test_the_encoders_token_limit_reaches_the_encoder(monkeypatch) -> None:
    from service.app import default_encoder

    monkeypatch.setenv("JUNCTION_ENCODER_MAX_TOKENS", "128")
    s = Settings()
    assert s.encoder_max_tokens == 128
    enc = default_encoder(s)
    assert enc.max_seq_length == 128  # type: ignore[attr-defined]
    assert default_encoder(Settings(encoder_max_tokens=256)).max_seq_length == 256  # type: ignore[attr-defined]
    for bad in (1, 513):
        with pytest.raises(ValidationError):
            Settings(encoder_max_tokens=bad)


def test_the_encoder_reads_only_its_token_limit() -> None:
    """With 128 tokens, words after the limit change nothing; with 256 they do."""
    from service.app import default_encoder

    head = " ".join(f"word{i}" for i in range(150))  # well over 128 tokens
    tail = head + " and a question at the very end about prime numbers?"
    short = default_encoder(Settings(encoder_backend="onnx", encoder_max_tokens=128))
    long = default_encoder(Settings(encoder_backend="onnx", encoder_max_tokens=512))
    a, b = short.encode([head, tail])
    assert float(a @ b) > 0.9999
    a, b = long.encode([head, tail])
    assert float(a @ b) < 0.999
