"""The micro-batching embedder: concurrent queries share forward passes; an LRU skips repeats."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from service.routing.embedder import BatchingEmbedder
from tests.service.helpers import HashEncoder


class SlowEncoder(HashEncoder):
    def encode(self, texts):
        time.sleep(0.02)  # a forward pass takes time; requests queue up meanwhile
        return super().encode(texts)


def test_concurrent_queries_are_batched_and_cached() -> None:
    enc = SlowEncoder()

    async def run() -> tuple[np.ndarray, np.ndarray]:
        emb = BatchingEmbedder(enc, max_batch=64, wait_ms=1.0, cache_size=100)
        await emb.start()
        try:
            rows = await asyncio.gather(*(emb.embed([f"q{i}"]) for i in range(40)))
            again = await emb.embed(["q3", "q7"])
        finally:
            await emb.close()
        return np.concatenate(rows), again

    X, again = asyncio.run(run())
    assert X.shape == (40, 384)
    assert np.allclose(X[3], HashEncoder().encode(["q3"])[0])  # results go to the right caller
    assert sum(enc.calls) == 40 and len(enc.calls) <= 4  # 40 queries in a few forward passes
    assert np.allclose(again, X[[3, 7]]) and sum(enc.calls) == 40  # the LRU answered


def test_lru_is_bounded_and_errors_reach_every_waiter() -> None:
    class Failing(HashEncoder):
        def encode(self, texts):
            if any(t == "bad" for t in texts):
                raise RuntimeError("encoder broke")
            return super().encode(texts)

    async def run() -> list[object]:
        emb = BatchingEmbedder(Failing(), max_batch=8, wait_ms=0, cache_size=3)
        await emb.start()
        try:
            for i in range(10):
                await emb.embed([f"t{i}"])
            assert len(emb._cache) == 3
            return await asyncio.gather(
                emb.embed(["bad"]), emb.embed(["fine"]), return_exceptions=True
            )
        finally:
            await emb.close()

    res = asyncio.run(run())
    assert any(isinstance(r, RuntimeError) for r in res)
