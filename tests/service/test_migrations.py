"""Alembic is the only schema path: up and down on SQLite and PostgreSQL, matching the ORM."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import inspect

from service.db.engine import Database
from service.db.models import Base


async def _tables(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def _roundtrip(url: str) -> None:
    db = Database(url)
    try:
        await db.migrate()
        tables = await _tables(db)
        assert set(Base.metadata.tables) <= tables
        assert "alembic_version" in tables
        await db.migrate()  # idempotent
        # each revision comes off alone: 0004 takes only the request records with it, 0002
        # only the budget ledgers
        await db.migrate("0003", down=True)
        assert await _tables(db) == tables - {"request_records"}
        await db.migrate("0001", down=True)
        assert await _tables(db) == tables - {"conversation_budgets", "request_records"}
        await db.migrate()
        assert await _tables(db) == tables
        await db.migrate("base", down=True)
        assert await _tables(db) <= {"alembic_version"}
        await db.migrate()
        assert set(Base.metadata.tables) <= await _tables(db)
    finally:
        await db.dispose()


def test_migrations_up_and_down_sqlite(tmp_path) -> None:
    asyncio.run(_roundtrip(f"sqlite:///{tmp_path / 'm.db'}"))


@pytest.mark.integration
def test_migrations_up_and_down_postgres(postgres_url: str) -> None:
    asyncio.run(_roundtrip(postgres_url))


def test_models_match_the_migrations(tmp_path) -> None:
    """Autogenerate finds nothing to do: the ORM and the migrations agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    async def run() -> list[object]:
        db = Database(f"sqlite:///{tmp_path / 'c.db'}")
        await db.migrate()
        async with db.engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata)
            )
        await db.dispose()
        return list(diff)

    assert asyncio.run(run()) == []
