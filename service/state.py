"""Shared fast state: rate-limit windows, spend counters, conversation state, registry version.

Redis when ``JUNCTION_REDIS_URL`` is set (every replica sees the same counters), otherwise an
in-process store with the same interface and bounded size. Durable facts (keys, models, spend
already committed) live in the database; this holds only what must be fast or shared.

Usage::

    store = make_store(settings)
    n = await store.incr_window("rpm:7", 1, window_s=60)
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Any, Protocol


class StateStore(Protocol):
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


class RedisStore:
    """The same interface over one Redis connection pool; every key gets ``prefix``."""

    def __init__(self, url: str, *, prefix: str) -> None:
        import redis.asyncio as redis

        self.prefix = prefix
        self.client = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
        self._set_max = self.client.register_script(_SET_MAX)

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
