"""Request records: every served request's decision, tokens and cost, written to the database.

The gateway used to keep these only as Prometheus counters (per model, no time, no key), which
cannot answer "what did routing save this key against always using the best model?". One row
per served request (``request_records``) can: it holds the served model, the router's pick and
lambda, the predicted p_correct of every candidate with its expected cost, the real tokens and
cost, the fallbacks, and the conversation's turn budget.

Rows are written off the response path: ``add`` queues a row and a flush task inserts what is
queued in one transaction a moment later (one commit for a burst of requests, not one each).
Readers on the same replica call ``flush()`` first; ``drain()`` at shutdown writes the rest.
A failed insert is logged and dropped: records serve the dashboard, never billing (spend is
``api_keys.spent_usd``, kept by ``service.accounting``).

Usage::

    log = RequestLog(db)
    log.add(RequestRecord(model="smollm2-135m", ...))
    await log.flush()
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert

from service.db.engine import Database
from service.db.models import RequestRecordRow

log = logging.getLogger(__name__)
FLUSH_DELAY_S = 0.2
MAX_QUEUE = 10_000


def text_sha256(text: str) -> str:
    """The key that links a request to evaluations of the same text (stripped, like replay)."""
    return hashlib.sha256(text.strip().encode()).hexdigest()


@dataclass
class RequestRecord:
    kind: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    query_sha256: str
    key_id: int | None = None
    chosen: str | None = None
    router: str | None = None
    lam: float | None = None
    p_correct: float | None = None
    candidates: dict[str, Any] | None = None
    fallbacks: int = 0
    conversation: str | None = None
    budget_total: int | None = None
    budget_granted: int | None = None
    budget_left: int | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def _row(record: RequestRecord) -> dict[str, Any]:
    """A record's columns, shallow (``asdict`` deep-copied every candidate's figures)."""
    return {f.name: getattr(record, f.name) for f in fields(record)}


class RequestLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: list[RequestRecord] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def add(self, record: RequestRecord) -> None:
        if len(self._queue) >= MAX_QUEUE:
            log.warning("request log queue full: dropping a record of %s", record.model)
            return
        self._queue.append(record)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_DELAY_S)
        await self.flush()

    async def flush(self) -> None:
        """Insert everything queued now (one transaction)."""
        async with self._lock:
            batch, self._queue = self._queue, []
            if not batch:
                return
            try:
                async with self.db.session() as s:
                    # one multi-row INSERT, not an ORM object per record: the flush runs on the
                    # event loop, and the ORM's unit of work cost ~0.3 ms of it per record
                    await s.execute(insert(RequestRecordRow), [_row(r) for r in batch])
                    await s.commit()
            except Exception:
                log.exception("could not write %d request records", len(batch))

    async def drain(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()
