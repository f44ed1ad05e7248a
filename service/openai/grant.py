"""Step 3 of a request, grant: what the request may spend, reserved on entry, settled once.

Two holds, each an async context manager that gives back what was not settled when it exits
(an error, a cancelled request):

- ``Granter.turn`` -- a conversation's token budget (TAB). When the request carries
  ``budget.total_tokens`` the policy picks this turn's ``max_tokens``, clamped to what the client
  asked and to what is left, and reserves it atomically in the budget ledger (Redis, else the
  database): concurrent turns never hold more than the budget together. The budget counts
  completion tokens, the only ones ``max_tokens`` controls; the first turn's ``total_tokens``
  fixes a conversation's budget. An exhausted conversation is a 429
  ``conversation_budget_exceeded``. It runs before the routing decision, because the grant is
  the ``max_tokens`` that expected costs are computed with.
- ``Granter.spend`` -- the API key's tokens per minute and worst-case spend (``Accounting``),
  after the decision (the worst case is over the candidates that may serve it).

Usage::

    async with granter.turn(req) as turn:               # turn.max_tokens: this turn's cap
        ...decide...
        async with granter.spend(principal, worst_cost_usd=w, tokens=n) as spend:
            ...dispatch, respond...
            await spend.settle(cost_usd=c, total_tokens=t)
            await turn.settle(used=completion_tokens, truncated=False)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from service.accounting import Accounting, Reservation
from service.auth import Principal
from service.errors import BudgetExceeded
from service.openai.parse import ParsedRequest
from service.state import BudgetLedger, BudgetLedgerStore

if TYPE_CHECKING:
    from budget_controller import BudgetController

log = logging.getLogger(__name__)
Embed = Callable[[Sequence[str]], Awaitable[npt.NDArray[np.float32]]]
# How many earlier user turns the policy sees.
POLICY_HISTORY = 8


@dataclass(frozen=True)
class Grant:
    """This turn's reservation in its conversation's ledger."""

    key: str
    granted: int  # completion tokens reserved: the turn's max_tokens
    left: int  # what the ledger had left once this was reserved


class Turn:
    """One request's hold on its conversation budget (no budget: ``grant`` is None)."""

    def __init__(
        self,
        budgets: BudgetLedgerStore,
        grant: Grant | None,
        *,
        requested: int | None,
        ttl_s: int,
    ) -> None:
        self._budgets = budgets
        self.grant = grant
        self._ttl_s = ttl_s
        self._requested = requested
        self._open = grant is not None
        self.left: int | None = grant.left if grant else None  # the ledger's latest figure

    @property
    def max_tokens(self) -> int | None:
        """The turn's completion cap: the grant, else what the client asked for."""
        return self.grant.granted if self.grant is not None else self._requested

    async def settle(self, *, used: int, truncated: bool, turn: bool = True) -> int | None:
        """Book ``used`` completion tokens in place of the grant (once); the tokens left."""
        if not self._open or self.grant is None:
            return self.left
        self._open = False
        g = self.grant
        if used > g.granted:
            log.warning("completion of %d tokens exceeds its max_tokens %d", used, g.granted)
        ledger = await self._budgets.budget_settle(
            g.key, granted=g.granted, used=used, truncated=truncated, turn=turn, ttl_s=self._ttl_s
        )
        if ledger is not None:
            self.left = ledger.left
        return self.left


class Spend:
    """One request's hold on its key's token rate and spend budget."""

    def __init__(self, accounting: Accounting, reservation: Reservation) -> None:
        self._accounting = accounting
        self.reservation = reservation
        self._open = True

    @property
    def key_id(self) -> int | None:
        return self.reservation.key_id

    async def settle(self, *, cost_usd: float, total_tokens: int) -> None:
        """Replace the reservation by the real cost and tokens (once)."""
        if self._open:
            self._open = False
            await self._accounting.settle(
                self.reservation, cost_usd=cost_usd, total_tokens=total_tokens
            )

    async def release(self) -> None:
        if self._open:
            self._open = False
            await self._accounting.release(self.reservation)


class Granter:
    """Reserves and settles a request's token budget and spend."""

    def __init__(
        self,
        *,
        budgets: BudgetLedgerStore,
        accounting: Accounting,
        embed: Embed,
        ttl_s: int,
        budget_controller: BudgetController | None = None,
    ) -> None:
        self.budgets = budgets
        self.accounting = accounting
        self.embed = embed
        self.ttl_s = ttl_s
        self._ctl: BudgetController | None = budget_controller
        self._ctl_tried = budget_controller is not None
        self._ctl_lock = asyncio.Lock()

    @asynccontextmanager
    async def turn(self, req: ParsedRequest) -> AsyncIterator[Turn]:
        grant = await self._reserve(req) if req.total_tokens is not None else None
        t = Turn(self.budgets, grant, requested=req.max_tokens, ttl_s=self.ttl_s)
        try:
            yield t
        finally:
            await t.settle(used=0, truncated=False, turn=False)  # a no-op once settled

    @asynccontextmanager
    async def spend(
        self, principal: Principal, *, worst_cost_usd: float, tokens: int
    ) -> AsyncIterator[Spend]:
        r = await self.accounting.admit(principal, worst_cost_usd=worst_cost_usd, tokens=tokens)
        s = Spend(self.accounting, r)
        try:
            yield s
        finally:
            await s.release()  # a no-op once settled

    # --- the TAB policy
    async def controller(self) -> BudgetController | None:
        """The TAB policy, loaded once on first use (off the event loop); None if unavailable."""
        if self._ctl_tried:
            return self._ctl
        async with self._ctl_lock:
            if not self._ctl_tried:
                try:
                    from budget_controller import BudgetController

                    self._ctl = await asyncio.to_thread(BudgetController.load)
                except Exception:
                    log.exception("no TAB budget policy: turns get what is left of the budget")
                self._ctl_tried = True
        return self._ctl

    async def _policy_tokens(self, req: ParsedRequest, ledger: BudgetLedger | None) -> int | None:
        ctl = await self.controller()
        if ctl is None:
            return None
        past = list(req.past_user_texts[-POLICY_HISTORY:])
        X = await self.embed([req.prompt_text, *past])
        spent = ledger.spent + ledger.reserved if ledger else 0
        return ctl.choose(
            embedding=X[0],
            past=list(X[1:]),
            turn=max(ledger.turns if ledger else 0, len(req.past_user_texts)),
            used=spent,
            total=ledger.total if ledger else int(req.total_tokens or 0),
            any_truncated=bool(ledger and ledger.any_truncated),
            last_truncated=bool(ledger and ledger.last_truncated),
        )

    async def _reserve(self, req: ParsedRequest) -> Grant:
        """The policy's budget for this turn, clamped to the client's and to what is left."""
        assert req.total_tokens is not None
        key = "budget:" + (req.conv_key or f"request:{req.request_id}")
        ledger = await self.budgets.budget_get(key)
        total = ledger.total if ledger else req.total_tokens
        if ledger is not None and ledger.left <= 0:
            raise over_budget(ledger)
        wanted = await self._policy_tokens(req, ledger)
        if wanted is None:
            wanted = ledger.left if ledger else total
        if req.max_tokens is not None:
            wanted = min(wanted, req.max_tokens)
        got = await self.budgets.budget_reserve(
            key, total=total, wanted=max(1, wanted), ttl_s=self.ttl_s
        )
        if got.granted <= 0:
            raise over_budget(got.ledger)
        return Grant(key=key, granted=got.granted, left=got.ledger.left)


def over_budget(ledger: BudgetLedger) -> BudgetExceeded:
    held = f" ({ledger.reserved} held by turns in flight)" if ledger.reserved else ""
    return BudgetExceeded(
        f"conversation token budget of {ledger.total} completion tokens is used up: "
        f"{ledger.spent} spent{held}; start a new conversation or raise its budget",
        code="conversation_budget_exceeded",
        param="budget.total_tokens",
    )
