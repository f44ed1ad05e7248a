"""The async engine and session factory; the schema comes only from Alembic migrations.

Usage::

    db = Database(settings.database_url)
    await db.migrate()                      # alembic upgrade head, in-loop
    async with db.session() as s: ...
    await db.dispose()
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from service.settings import normalise_database_url

REPO_ROOT = Path(__file__).resolve().parents[2]


def _migrations_dir() -> Path:
    """The ``migrations`` package's folder: the checkout's, or site-packages' when installed.

    Found without importing it (``find_spec``), so nothing of Alembic runs at import."""
    spec = importlib.util.find_spec("migrations")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations)))
        if (folder / "env.py").exists():
            return folder
    return REPO_ROOT / "migrations"


MIGRATIONS_DIR = _migrations_dir()


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers run while one writer commits; foreign keys are off by default in SQLite.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    url = normalise_database_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    ini = REPO_ROOT / "alembic.ini"
    # An installed gateway has no alembic.ini (only the checkout does); nothing in it is needed.
    cfg = Config(str(ini)) if ini.exists() else Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalise_database_url(url).replace("%", "%%"))
    return cfg


def _run_alembic(conn: Connection, url: str, revision: str, *, down: bool) -> None:
    from alembic import command

    cfg = alembic_config(url)
    cfg.attributes["connection"] = conn
    if down:
        command.downgrade(cfg, revision)
    else:
        command.upgrade(cfg, revision)


class Database:
    """Owns the engine; hands out sessions that commit only when asked."""

    def __init__(self, url: str) -> None:
        self.url = normalise_database_url(url)
        self.engine = make_engine(self.url)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session:
            yield session

    async def migrate(self, revision: str = "head", *, down: bool = False) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(_run_alembic, self.url, revision, down=down)

    async def ping(self) -> bool:
        from sqlalchemy import text

        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()
