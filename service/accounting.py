"""Per-key limits and spend: request and token rate limits, spend budgets, usage records.

Spend is reserved before the upstream call (the request's worst-case cost) and reconciled with
the real usage afterwards, so concurrent requests cannot overspend a budget; the durable total is
``api_keys.spent_usd`` in the database, mirrored in the shared store for the fast check.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy import update

from service.auth import Principal
from service.db.engine import Database
from service.db.models import ApiKeyRow
from service.errors import BudgetExceeded, RateLimited
from service.state import StateStore

log = logging.getLogger(__name__)
WINDOW_S = 60


@dataclass
class Reservation:
    key_id: int | None
    usd: float


class Accounting:
    def __init__(self, *, store: StateStore, db: Database) -> None:
        self.store = store
        self.db = db
        self._pending: set[asyncio.Task[None]] = set()

    async def admit(self, p: Principal, *, worst_cost_usd: float) -> Reservation:
        """Count the request against the key's limits and reserve its worst-case cost."""
        if p.key_id is None:
            return Reservation(None, 0.0)
        if p.requests_per_minute is not None:
            n = await self.store.incr_window(f"rpm:{p.key_id}", 1, window_s=WINDOW_S)
            if n > p.requests_per_minute:
                raise RateLimited(
                    f"request rate limit of {p.requests_per_minute}/min exceeded",
                    headers={"Retry-After": str(WINDOW_S)},
                )
        if p.tokens_per_minute is not None:
            used = await self.store.get_window(f"tpm:{p.key_id}", window_s=WINDOW_S)
            if used >= p.tokens_per_minute:
                raise RateLimited(
                    f"token rate limit of {p.tokens_per_minute}/min exceeded",
                    code="rate_limit_exceeded",
                    headers={"Retry-After": str(WINDOW_S)},
                )
        if p.budget_usd is None:
            return Reservation(p.key_id, 0.0)
        key = f"spend:{p.key_id}"
        await self.store.init_float(key, p.spent_usd)
        total = await self.store.incr_float(key, worst_cost_usd)
        if total > p.budget_usd + 1e-12:
            await self.store.incr_float(key, -worst_cost_usd)
            raise BudgetExceeded(
                f"spend budget of ${p.budget_usd:.4f} exhausted for this key",
                headers={"Retry-After": "3600"},
            )
        return Reservation(p.key_id, worst_cost_usd)

    async def settle(self, r: Reservation, *, cost_usd: float, total_tokens: int) -> None:
        """Replace the reservation by the real cost; add tokens; persist the spend."""
        if r.key_id is None:
            return
        if total_tokens:
            await self.store.incr_window(f"tpm:{r.key_id}", total_tokens, window_s=WINDOW_S)
        if r.usd or cost_usd:
            await self.store.incr_float(f"spend:{r.key_id}", cost_usd - r.usd)
        if cost_usd:
            task = asyncio.create_task(self._persist(r.key_id, cost_usd))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def release(self, r: Reservation) -> None:
        if r.key_id is not None and r.usd:
            await self.store.incr_float(f"spend:{r.key_id}", -r.usd)

    async def _persist(self, key_id: int, cost_usd: float) -> None:
        try:
            async with self.db.session() as s:
                await s.execute(
                    update(ApiKeyRow)
                    .where(ApiKeyRow.id == key_id)
                    .values(spent_usd=ApiKeyRow.spent_usd + cost_usd)
                )
                await s.commit()
        except Exception:
            log.exception("could not persist spend of key %s", key_id)

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
