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
