"""Conversation token budget ledgers in the database: the gateway's ledger when Redis is absent.

The contract of the Redis and in-process ledgers in ``service.state``: ``budget_reserve`` grants
``min(wanted, total - spent - reserved)``, the first reservation fixes ``total``, and
``budget_settle`` gives the grant back and books at most the grant. The ledgers live in the
``conversation_budgets`` table, so they survive a gateway restart and every replica on one
database shares them.

Atomicity: a reservation is one short transaction that first upserts the row (insert it if
missing, start it afresh if expired: ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expired``), then
reads it and books the grant. The upsert takes the lock that serialises reservations of one
conversation until the commit: on SQLite the database write lock, which a write statement takes
when it starts (the first statement of the transaction is a write, so no read lock ever has to
be upgraded); on PostgreSQL the row lock, which ``ON CONFLICT DO UPDATE`` takes even when its
``WHERE`` is false and ``SELECT ... FOR UPDATE`` states outright. Two turns therefore never book
against the same ``reserved``, on one replica or many. A settlement is one ``UPDATE`` whose
arithmetic runs in SQL.

Usage::

    ledger = DatabaseBudgetLedger(db)
    grant = await ledger.budget_reserve("budget:conv:7:abc", total=500, wanted=120, ttl_s=86400)
    await ledger.budget_settle(
        "budget:conv:7:abc", granted=grant.granted, used=97, truncated=False, turn=True,
        ttl_s=86400,
    )
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import replace
from typing import Any

from sqlalchemy import Row, case, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.dml import Insert

from service.db.engine import Database
from service.db.models import ConversationBudgetRow as R
from service.state import BudgetGrant, BudgetLedger

# Ledger writes one process runs at once on PostgreSQL. Turns of one conversation queue on its
# row lock anyway; more would only hold pool connections that other requests need.
MAX_WRITERS = 8
# Expired ledgers are deleted at most this often (by whichever replica reserves next).
PURGE_EVERY_S = 300.0
# Keys longer than the column (client-chosen conversation or request ids) keep a readable prefix
# and their SHA-256.
MAX_KEY_CHARS = 255
# A client sets ``total_tokens``; larger budgets are unlimited in practice and would overflow
# PostgreSQL's BIGINT.
MAX_TOTAL_TOKENS = 2**62

_COLUMNS = (R.total, R.spent, R.reserved, R.turns, R.any_truncated, R.last_truncated)
_LedgerRow = Row[int, int, int, int, bool, bool]


def row_key(key: str) -> str:
    """The table's key for a ledger key: itself, or a prefix and its hash if too long."""
    if len(key) <= MAX_KEY_CHARS:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return key[: MAX_KEY_CHARS - len(digest) - 1] + "#" + digest


def _ledger(row: _LedgerRow) -> BudgetLedger:
    return BudgetLedger(
        total=int(row.total),
        spent=int(row.spent),
        reserved=int(row.reserved),
        turns=int(row.turns),
        any_truncated=bool(row.any_truncated),
        last_truncated=bool(row.last_truncated),
    )


class DatabaseBudgetLedger:
    """Budget ledgers in the ``conversation_budgets`` table, over the gateway's own engine.

    ``DatabaseBudgetLedger(db).budget_reserve(key, total=500, wanted=120, ttl_s=86400)``
    """

    def __init__(
        self, db: Database, *, max_writers: int = MAX_WRITERS, purge_every_s: float = PURGE_EVERY_S
    ) -> None:
        self.db = db
        self.purge_every_s = purge_every_s
        self._postgres = db.engine.dialect.name == "postgresql"
        # SQLite has one writer at a time: queueing here is fair and prompt, where writers
        # waiting on the file lock poll it with growing sleeps (busy_timeout).
        self._writers = asyncio.Semaphore(max_writers if self._postgres else 1)
        self._next_purge = 0.0

    async def budget_get(self, key: str) -> BudgetLedger | None:
        stmt = select(*_COLUMNS).where(R.key == row_key(key), R.expires_at >= time.time())
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _ledger(row)

    def _upsert(self, key: str, *, total: int, now: float, ttl_s: int) -> Insert:
        """Insert a fresh ledger, or start an expired one afresh; a live one is left as it is."""
        fresh: dict[str, Any] = {
            "total": min(total, MAX_TOTAL_TOKENS),
            "spent": 0,
            "reserved": 0,
            "turns": 0,
            "any_truncated": False,
            "last_truncated": False,
            "expires_at": now + ttl_s,
        }
        if self._postgres:
            pg = pg_insert(R).values(key=key, **fresh)
            return pg.on_conflict_do_update(
                index_elements=[R.key], set_=fresh, where=R.expires_at < now
            )
        lite = sqlite_insert(R).values(key=key, **fresh)
        return lite.on_conflict_do_update(
            index_elements=[R.key], set_=fresh, where=R.expires_at < now
        )

    async def budget_reserve(self, key: str, *, total: int, wanted: int, ttl_s: int) -> BudgetGrant:
        await self._purge_expired()
        async with self._writers, self.db.engine.begin() as conn:
            k, now = row_key(key), time.time()
            # The upsert locks the ledger (see the module docstring) until this block commits.
            await conn.execute(self._upsert(k, total=total, now=now, ttl_s=ttl_s))
            row = (await conn.execute(select(*_COLUMNS).where(R.key == k).with_for_update())).one()
            ledger = _ledger(row)
            granted = max(0, min(wanted, ledger.left))
            await conn.execute(
                update(R)
                .where(R.key == k)
                .values(reserved=R.reserved + granted, expires_at=now + ttl_s)
            )
        return BudgetGrant(
            granted=granted, ledger=replace(ledger, reserved=ledger.reserved + granted)
        )

    async def budget_settle(
        self, key: str, *, granted: int, used: int, truncated: bool, turn: bool, ttl_s: int
    ) -> BudgetLedger | None:
        now = time.time()
        values: dict[str, Any] = {
            "spent": R.spent + max(0, min(used, granted)),
            "reserved": case((R.reserved > granted, R.reserved - granted), else_=0),
            "expires_at": now + ttl_s,
        }
        if turn:
            values["turns"] = R.turns + 1
            values["last_truncated"] = truncated
            if truncated:
                values["any_truncated"] = True
        stmt = (
            update(R)
            .where(R.key == row_key(key), R.expires_at >= now)
            .values(values)
            .returning(*_COLUMNS)
        )
        async with self._writers, self.db.engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _ledger(row)

    async def _purge_expired(self) -> None:
        """Delete the ledgers of conversations quiet for longer than their ttl."""
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + self.purge_every_s
        async with self._writers, self.db.engine.begin() as conn:
            await conn.execute(delete(R).where(R.expires_at < time.time()))
