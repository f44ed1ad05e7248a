"""Per-key limits and spend: request and token rate limits, spend budgets, usage records.

The request rate is counted before the body is read (``admit_request``, a route dependency), so
a rate-limited key costs no parsing. Tokens and spend are reserved atomically before the
upstream call (``admit``: the token estimate and the worst-case cost are added to the shared
counters first and checked after, so 50 concurrent requests cannot all pass a 10 tokens/min
key) and reconciled with the real usage afterwards. Spend is written to the database
(``api_keys.spent_usd``) before ``settle`` returns, so before the response completes: a crash
after a response cannot lose what it cost. The shared store mirrors it for the fast check.
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
    tokens: int = 0


class Accounting:
    def __init__(self, *, store: StateStore, db: Database) -> None:
        self.store = store
        self.db = db
        self._pending: set[asyncio.Task[None]] = set()

    async def admit_request(self, p: Principal) -> None:
        """Count one request against the key's request rate; refuse a key already out of
        tokens. Cheap: runs before the body is read."""
        if p.key_id is None:
            return
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
                raise self._over_tokens(p)

    @staticmethod
    def _over_tokens(p: Principal) -> RateLimited:
        return RateLimited(
            f"token rate limit of {p.tokens_per_minute}/min exceeded",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(WINDOW_S)},
        )

    async def admit(self, p: Principal, *, worst_cost_usd: float, tokens: int = 0) -> Reservation:
        """Reserve the request's token estimate and worst-case cost, atomically: add first,
        then check, and take back what does not fit."""
        if p.key_id is None:
            return Reservation(None, 0.0)
        reserved_tokens = 0
        if p.tokens_per_minute is not None:
            reserved_tokens = max(1, tokens)
            n = await self.store.incr_window(f"tpm:{p.key_id}", reserved_tokens, window_s=WINDOW_S)
            if n > p.tokens_per_minute:
                await self.store.incr_window(f"tpm:{p.key_id}", -reserved_tokens, window_s=WINDOW_S)
                raise self._over_tokens(p)
        if p.budget_usd is None:
            return Reservation(p.key_id, 0.0, reserved_tokens)
        key = f"spend:{p.key_id}"
        await self.store.init_float(key, p.spent_usd)
        total = await self.store.incr_float(key, worst_cost_usd)
        if total > p.budget_usd + 1e-12:
            await self.store.incr_float(key, -worst_cost_usd)
            if reserved_tokens:
                await self.store.incr_window(f"tpm:{p.key_id}", -reserved_tokens, window_s=WINDOW_S)
            raise BudgetExceeded(
                f"spend budget of ${p.budget_usd:.4f} exhausted for this key",
                headers={"Retry-After": "3600"},
            )
        return Reservation(p.key_id, worst_cost_usd, reserved_tokens)

    async def settle(self, r: Reservation, *, cost_usd: float, total_tokens: int) -> None:
        """Replace the reservation by the real cost and tokens; persist the spend (awaited:
        it used to be a background task, and a crash lost 85% of billed spend)."""
        if r.key_id is None:
            return
        if total_tokens != r.tokens:
            await self.store.incr_window(
                f"tpm:{r.key_id}", total_tokens - r.tokens, window_s=WINDOW_S
            )
        if r.usd or cost_usd:
            await self.store.incr_float(f"spend:{r.key_id}", cost_usd - r.usd)
        if cost_usd:
            await asyncio.shield(self._persist(r.key_id, cost_usd))

    async def release(self, r: Reservation) -> None:
        if r.key_id is not None and r.usd:
            await self.store.incr_float(f"spend:{r.key_id}", -r.usd)
        if r.key_id is not None and r.tokens:
            await self.store.incr_window(f"tpm:{r.key_id}", -r.tokens, window_s=WINDOW_S)

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
