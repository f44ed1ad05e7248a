"""Query embeddings for routing: micro-batched across concurrent requests, with an LRU.

Requests that arrive while the encoder is busy wait in a queue; the next forward pass takes all
of them at once (up to ``max_batch``): one thread hand-off per batch instead of per query. The
default int8 ONNX encoder costs about the same per query in a batch as alone (a ~17-token chat
turn, one thread: 1.94 ms alone, 2.06-2.15 ms per query in batches of 8-64; 64% of it is the
int8 MatMulNBits kernels), so at high concurrency routed throughput is bound by the encoder's
~2 ms of CPU per distinct query, and the LRU is what saves repeats. The encoder runs in one
worker thread, so the event loop never blocks on it.

Usage::

    emb = BatchingEmbedder(QueryEncoder(), max_batch=64, wait_ms=1.0, cache_size=4096)
    await emb.start()
    X = await emb.embed(["What is 2 + 2?"])   # [1, 384] float32
    await emb.close()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]


class TextEncoder(Protocol):
    """What ``training.encoder.QueryEncoder`` offers: texts -> unit-norm rows [N, D]."""

    def encode(self, texts: Sequence[str]) -> Array: ...


class BatchingEmbedder:
    def __init__(
        self,
        encoder: TextEncoder,
        *,
        max_batch: int = 64,
        wait_ms: float = 1.0,
        cache_size: int = 4096,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.encoder = encoder
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self.cache_size = cache_size
        self.on_batch = on_batch
        self._cache: OrderedDict[str, Array] = OrderedDict()
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[Array]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="junction-encoder")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run(), name="junction-embedder")

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    def warm(self) -> None:
        """Load the encoder's weights now (blocking) instead of on the first request."""
        self.encoder.encode(["warm-up"])

    def _cached(self, text: str) -> Array | None:
        v = self._cache.get(text)
        if v is not None:
            self._cache.move_to_end(text)
        return v

    def _remember(self, text: str, v: Array) -> None:
        if self.cache_size <= 0:
            return
        self._cache[text] = v
        self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def embed(self, texts: Sequence[str]) -> Array:
        """Rows [len(texts), D] in input order."""
        if self._queue is None:
            raise RuntimeError("BatchingEmbedder.start() was not awaited")
        loop = asyncio.get_running_loop()
        rows: list[Array | asyncio.Future[Array]] = []
        for text in texts:
            hit = self._cached(text)
            if hit is not None:
                rows.append(hit)
                continue
            fut: asyncio.Future[Array] = loop.create_future()
            self._queue.put_nowait((text, fut))
            rows.append(fut)
        out = [r if isinstance(r, np.ndarray) else await r for r in rows]
        return np.stack(out).astype(np.float32, copy=False)

    async def embed_uncached(self, texts: Sequence[str], batch: int = 64) -> Array:
        """Rows [len(texts), D] for a bulk job (the cost knob's calibration sample): on the
        encoder's own thread, in slices, so requests queue between slices; the LRU is left as
        it is."""
        loop = asyncio.get_running_loop()
        texts = list(texts)
        parts = [
            await loop.run_in_executor(self._pool, self.encoder.encode, texts[i : i + batch])
            for i in range(0, len(texts), batch)
        ]
        if not parts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts])

    async def _run(self) -> None:
        assert self._queue is not None
        queue = self._queue
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            if self.wait_s > 0 and queue.empty():
                await asyncio.sleep(self.wait_s)
            while len(batch) < self.max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            texts = list(dict.fromkeys(t for t, _ in batch))
            try:
                vecs = await loop.run_in_executor(self._pool, self.encoder.encode, texts)
            except Exception as exc:  # hand the failure to every waiter, keep serving
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            if self.on_batch is not None:
                self.on_batch(len(texts))
            found = {t: np.asarray(v, dtype=np.float32) for t, v in zip(texts, vecs, strict=True)}
            for t, v in found.items():
                self._remember(t, v)
            for t, fut in batch:
                if not fut.done():
                    fut.set_result(found[t])
