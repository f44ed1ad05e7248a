"""Shared fast state: rate-limit windows, spend counters, conversation state, registry version.

Redis when ``JUNCTION_REDIS_URL`` is set (every replica sees the same counters), otherwise an
in-process store with the same interface and bounded size. Durable facts (keys, models, spend
already committed) live in the database; this holds only what must be fast or shared.

Conversation token budgets use a reserve/settle ledger (``total``, ``spent``, ``reserved``):
``budget_reserve`` grants ``min(wanted, total - spent - reserved)`` in one atomic step (a Lua
script in Redis; no ``await`` inside the critical section in-process), so concurrent turns can
never together be granted more than the budget; ``budget_settle`` returns the grant and books
the tokens really generated (never more than the grant). In Redis the ledger survives a gateway
restart and is shared by replicas. Without Redis the gateway keeps ledgers in the database instead
(``service.budget_ledger``, chosen in ``service.app``), for the same reasons; ``MemoryStore``'s
ledger, which lives as long as the process, serves tools and tests that run no database.

Usage::

    store = make_store(settings.redis_url, prefix=settings.redis_prefix)
    n = await store.incr_window("rpm:7", 1, window_s=60)
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any, Protocol


@dataclass(frozen=True)
class BudgetLedger:
    """One conversation's token budget: what is spent, what turns in flight hold, turn count."""

    total: int
    spent: int = 0
    reserved: int = 0
    turns: int = 0  # settled turns
    any_truncated: bool = False  # some turn stopped at its max_tokens
    last_truncated: bool = False

    @property
    def left(self) -> int:
        return max(0, self.total - self.spent - self.reserved)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "spent": self.spent,
            "reserved": self.reserved,
            "turns": self.turns,
            "any_truncated": int(self.any_truncated),
            "last_truncated": int(self.last_truncated),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BudgetLedger:
        return cls(
            total=int(d["total"]),
            spent=int(d.get("spent", 0)),
            reserved=int(d.get("reserved", 0)),
            turns=int(d.get("turns", 0)),
            any_truncated=bool(int(d.get("any_truncated", 0))),
            last_truncated=bool(int(d.get("last_truncated", 0))),
        )


@dataclass(frozen=True)
class BudgetGrant:
    """The tokens granted to one turn (0 = nothing left) and the ledger right after."""

    granted: int
    ledger: BudgetLedger


class BudgetLedgerStore(Protocol):
    """Where conversation budget ledgers live: the state store, or the database without Redis."""

    async def budget_get(self, key: str) -> BudgetLedger | None: ...
    async def budget_reserve(
        self, key: str, *, total: int, wanted: int, ttl_s: int
    ) -> BudgetGrant: ...
    async def budget_settle(
        self, key: str, *, granted: int, used: int, truncated: bool, turn: bool, ttl_s: int
    ) -> BudgetLedger | None: ...


class StateStore(BudgetLedgerStore, Protocol):
    async def incr_window(self, key: str, amount: int, *, window_s: int) -> int: ...
    async def get_window(self, key: str, *, window_s: int) -> int: ...
    async def incr_float(self, key: str, amount: float) -> float: ...
    async def init_float(self, key: str, value: float) -> None: ...
    async def get_float(self, key: str) -> float | None: ...
    async def get_json(self, key: str) -> dict[str, Any] | None: ...
    async def set_json(self, key: str, value: dict[str, Any], *, ttl_s: int) -> None: ...
    async def get_int(self, key: str) -> int | None: ...
    async def set_int_max(self, key: str, value: int) -> None: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...


def _window_id(window_s: int) -> int:
    return int(time.time() // window_s)


class MemoryStore:
    """One process's state; the conversation map is an LRU capped at ``max_items``."""

    def __init__(self, *, max_items: int = 100_000) -> None:
        self.max_items = max_items
        self._windows: dict[str, tuple[int, int]] = {}
        self._floats: dict[str, float] = {}
        self._json: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._ints: dict[str, int] = {}
        self._budgets: OrderedDict[str, tuple[float, BudgetLedger]] = OrderedDict()

    async def incr_window(self, key: str, amount: int, *, window_s: int) -> int:
        wid = _window_id(window_s)
        cur_wid, n = self._windows.get(key, (wid, 0))
        n = (n if cur_wid == wid else 0) + amount
        if len(self._windows) > self.max_items:
            self._windows.clear()  # stale windows only; the current minute restarts
        self._windows[key] = (wid, n)
        return n

    async def get_window(self, key: str, *, window_s: int) -> int:
        wid, n = self._windows.get(key, (-1, 0))
        return n if wid == _window_id(window_s) else 0

    async def incr_float(self, key: str, amount: float) -> float:
        self._floats[key] = self._floats.get(key, 0.0) + amount
        return self._floats[key]

    async def init_float(self, key: str, value: float) -> None:
        self._floats.setdefault(key, value)

    async def get_float(self, key: str) -> float | None:
        return self._floats.get(key)

    async def get_json(self, key: str) -> dict[str, Any] | None:
        item = self._json.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < time.monotonic():
            del self._json[key]
            return None
        self._json.move_to_end(key)
        return value

    async def set_json(self, key: str, value: dict[str, Any], *, ttl_s: int) -> None:
        self._json[key] = (time.monotonic() + ttl_s, value)
        self._json.move_to_end(key)
        while len(self._json) > self.max_items:
            self._json.popitem(last=False)

    async def get_int(self, key: str) -> int | None:
        return self._ints.get(key)

    async def set_int_max(self, key: str, value: int) -> None:
        self._ints[key] = max(value, self._ints.get(key, value))

    def _ledger(self, key: str) -> BudgetLedger | None:
        item = self._budgets.get(key)
        if item is None or item[0] < time.monotonic():
            self._budgets.pop(key, None)
            return None
        return item[1]

    def _put_ledger(self, key: str, ledger: BudgetLedger, ttl_s: int) -> None:
        self._budgets[key] = (time.monotonic() + ttl_s, ledger)
        self._budgets.move_to_end(key)
        while len(self._budgets) > self.max_items:
            self._budgets.popitem(last=False)

    async def budget_get(self, key: str) -> BudgetLedger | None:
        return self._ledger(key)

    # No await between the read and the write below: atomic on the event loop.
    async def budget_reserve(self, key: str, *, total: int, wanted: int, ttl_s: int) -> BudgetGrant:
        ledger = self._ledger(key) or BudgetLedger(total=total)
        granted = max(0, min(wanted, ledger.left))
        ledger = replace(ledger, reserved=ledger.reserved + granted)
        self._put_ledger(key, ledger, ttl_s)
        return BudgetGrant(granted=granted, ledger=ledger)

    async def budget_settle(
        self, key: str, *, granted: int, used: int, truncated: bool, turn: bool, ttl_s: int
    ) -> BudgetLedger | None:
        ledger = self._ledger(key)
        if ledger is None:
            return None
        ledger = replace(
            ledger,
            spent=ledger.spent + max(0, min(used, granted)),
            reserved=max(0, ledger.reserved - granted),
            turns=ledger.turns + int(turn),
            any_truncated=ledger.any_truncated or (turn and truncated),
            last_truncated=truncated if turn else ledger.last_truncated,
        )
        self._put_ledger(key, ledger, ttl_s)
        return ledger

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


# Sets key to max(current, value) atomically.
_SET_MAX = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
local v = tonumber(ARGV[1])
if v > cur then redis.call('SET', KEYS[1], ARGV[1]) return v end
return cur
"""


# Conversation budget ledger (a hash). ARGV: total, wanted, ttl. Returns the grant and the ledger.
_BUDGET_RESERVE = """
local h = KEYS[1]
if redis.call('EXISTS', h) == 0 then
  redis.call('HSET', h, 'total', ARGV[1], 'spent', 0, 'reserved', 0, 'turns', 0,
             'any_truncated', 0, 'last_truncated', 0)
end
local v = redis.call('HMGET', h, 'total', 'spent', 'reserved', 'turns', 'any_truncated',
                     'last_truncated')
local left = tonumber(v[1]) - tonumber(v[2]) - tonumber(v[3])
local grant = math.min(tonumber(ARGV[2]), left)
if grant < 0 then grant = 0 end
if grant > 0 then redis.call('HINCRBY', h, 'reserved', grant) end
redis.call('EXPIRE', h, ARGV[3])
return {grant, v[1], v[2], tonumber(v[3]) + grant, v[4], v[5], v[6]}
"""

# ARGV: granted, used, truncated (0/1), turn (0/1), ttl. Returns the ledger, or nil if gone.
_BUDGET_SETTLE = """
local h = KEYS[1]
if redis.call('EXISTS', h) == 0 then return nil end
local granted = tonumber(ARGV[1])
local used = math.max(0, math.min(tonumber(ARGV[2]), granted))
local reserved = math.max(0, tonumber(redis.call('HGET', h, 'reserved')) - granted)
redis.call('HSET', h, 'reserved', reserved)
redis.call('HINCRBY', h, 'spent', used)
if ARGV[4] == '1' then
  redis.call('HINCRBY', h, 'turns', 1)
  redis.call('HSET', h, 'last_truncated', ARGV[3])
  if ARGV[3] == '1' then redis.call('HSET', h, 'any_truncated', 1) end
end
redis.call('EXPIRE', h, ARGV[5])
return redis.call('HMGET', h, 'total', 'spent', 'reserved', 'turns', 'any_truncated',
                  'last_truncated')
"""
_LEDGER_FIELDS = ("total", "spent", "reserved", "turns", "any_truncated", "last_truncated")


class RedisStore:
    """The same interface over one Redis connection pool; every key gets ``prefix``."""

    def __init__(self, url: str, *, prefix: str) -> None:
        import redis.asyncio as redis

        self.prefix = prefix
        self.client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
        self._set_max = self.client.register_script(_SET_MAX)
        self._budget_reserve = self.client.register_script(_BUDGET_RESERVE)
        self._budget_settle = self.client.register_script(_BUDGET_SETTLE)

    def _k(self, key: str) -> str:
        return self.prefix + key

    async def incr_window(self, key: str, amount: int, *, window_s: int) -> int:
        k = f"{self._k(key)}:{_window_id(window_s)}"
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.incrby(k, amount)
            pipe.expire(k, window_s * 2)
            n, _ = await pipe.execute()
        return int(n)

    async def get_window(self, key: str, *, window_s: int) -> int:
        v = await self.client.get(f"{self._k(key)}:{_window_id(window_s)}")
        return int(v) if v is not None else 0

    async def incr_float(self, key: str, amount: float) -> float:
        return float(await self.client.incrbyfloat(self._k(key), amount))

    async def init_float(self, key: str, value: float) -> None:
        await self.client.set(self._k(key), repr(float(value)), nx=True)

    async def get_float(self, key: str) -> float | None:
        v = await self.client.get(self._k(key))
        return None if v is None else float(v)

    async def get_json(self, key: str) -> dict[str, Any] | None:
        v = await self.client.get(self._k(key))
        return None if v is None else dict(json.loads(v))

    async def set_json(self, key: str, value: dict[str, Any], *, ttl_s: int) -> None:
        await self.client.set(self._k(key), json.dumps(value), ex=ttl_s)

    async def get_int(self, key: str) -> int | None:
        v = await self.client.get(self._k(key))
        return None if v is None else int(v)

    async def set_int_max(self, key: str, value: int) -> None:
        await self._set_max(keys=[self._k(key)], args=[value])

    async def budget_get(self, key: str) -> BudgetLedger | None:
        v = await self.client.hmget(self._k(key), list(_LEDGER_FIELDS))
        if v[0] is None:
            return None
        return BudgetLedger.from_dict(dict(zip(_LEDGER_FIELDS, v, strict=True)))

    async def budget_reserve(self, key: str, *, total: int, wanted: int, ttl_s: int) -> BudgetGrant:
        r = await self._budget_reserve(keys=[self._k(key)], args=[total, wanted, ttl_s])
        ledger = BudgetLedger.from_dict(dict(zip(_LEDGER_FIELDS, r[1:], strict=True)))
        return BudgetGrant(granted=int(r[0]), ledger=ledger)

    async def budget_settle(
        self, key: str, *, granted: int, used: int, truncated: bool, turn: bool, ttl_s: int
    ) -> BudgetLedger | None:
        r = await self._budget_settle(
            keys=[self._k(key)], args=[granted, used, int(truncated), int(turn), ttl_s]
        )
        if r is None:
            return None
        return BudgetLedger.from_dict(dict(zip(_LEDGER_FIELDS, r, strict=True)))

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self.client.aclose()


def make_store(redis_url: str | None, *, prefix: str) -> StateStore:
    if redis_url:
        return RedisStore(redis_url, prefix=prefix)
    return MemoryStore()
